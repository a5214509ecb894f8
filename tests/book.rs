//! The book in `chapters/` against the code it shows.
//!
//! mdBook renders an `{{#include file:anchor}}` whose anchor does not exist as an empty block,
//! without an error, and leaves a missing image to the browser. These tests are the guard: every
//! include names a file and an anchor (or line range) that exist and give text, every image a
//! chapter shows exists, every `ANCHOR` marker in `src/` and `examples/` is balanced and shown
//! by some chapter, and `SUMMARY.md` links only chapters that exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use gpt2_tutorial::tutorial::architecture::group_digits;
use gpt2_tutorial::Gpt2Config;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chapters_dir() -> PathBuf {
    root().join("chapters")
}

/// `a/b/../c` → `a/c`, without touching the file system, so messages show clean paths.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

fn files_with_ext(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files_with_ext(&p, ext, out);
        } else if p.extension().is_some_and(|e| e == ext) {
            out.push(p);
        }
    }
}

/// The pages of the book: `chapters/generated/` holds fragments pages include, not pages.
fn markdown_files() -> Vec<PathBuf> {
    let mut v = Vec::new();
    files_with_ext(&chapters_dir(), "md", &mut v);
    v.retain(|p| !p.starts_with(chapters_dir().join("generated")));
    assert!(!v.is_empty(), "no chapters in {}", chapters_dir().display());
    v
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", rel(p)))
}

/// One `{{#include ...}}` (or `rustdoc_include`) in a chapter.
#[derive(Debug)]
struct Include {
    chapter: PathBuf,
    line: usize,
    target: PathBuf,
    selector: Selector,
}

#[derive(Debug, PartialEq)]
enum Selector {
    Whole,
    Anchor(String),
    /// 1-based, inclusive, as mdBook counts; `None` is "to the end".
    Lines(usize, Option<usize>),
}

fn parse_selector(spec: &str) -> Option<Selector> {
    let num = |s: &str| -> Option<Option<usize>> {
        if s.is_empty() {
            Some(None)
        } else {
            s.parse().ok().map(Some)
        }
    };
    match spec.split(':').collect::<Vec<_>>().as_slice() {
        [] | [""] => Some(Selector::Whole),
        [a] if a.chars().all(|c| c.is_ascii_digit()) => {
            let n = a.parse().ok()?;
            Some(Selector::Lines(n, Some(n)))
        }
        [a] => Some(Selector::Anchor(a.to_string())),
        [a, b] => Some(Selector::Lines(num(a)?.unwrap_or(1), num(b)?)),
        _ => None,
    }
}

/// Every include in every chapter, skipping those escaped with a backslash (mdBook prints them
/// literally).
fn includes() -> Vec<Include> {
    let mut out = Vec::new();
    for chapter in markdown_files() {
        let text = read(&chapter);
        for (n, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(start) = rest.find("{{#") {
                let escaped = rest[..start].ends_with('\\');
                let after = &rest[start + 3..];
                let end = after
                    .find("}}")
                    .unwrap_or_else(|| panic!("{}:{}: unclosed `{{{{#`", rel(&chapter), n + 1));
                let body = after[..end].trim();
                rest = &after[end + 2..];
                if escaped {
                    continue;
                }
                let (kind, arg) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
                if !matches!(kind, "include" | "rustdoc_include") {
                    continue;
                }
                let arg = arg.trim();
                let (file, spec) = arg.split_once(':').unwrap_or((arg, ""));
                let selector = parse_selector(spec)
                    .unwrap_or_else(|| panic!("{}:{}: cannot read `{body}`", rel(&chapter), n + 1));
                out.push(Include {
                    target: normalize(&chapter.parent().unwrap().join(file)),
                    chapter: chapter.clone(),
                    line: n + 1,
                    selector,
                });
            }
        }
    }
    out
}

fn is_marker(line: &str, kind: &str) -> Option<String> {
    let i = line.find(kind)?;
    let name: String = line[i + kind.len()..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    (!name.is_empty()).then_some(name)
}

fn anchor_start(line: &str) -> Option<String> {
    is_marker(line, "ANCHOR:")
}

fn anchor_end(line: &str) -> Option<String> {
    is_marker(line, "ANCHOR_END:")
}

/// What mdBook would put on the page for `inc`, or why it cannot.
fn resolve(inc: &Include) -> Result<String, String> {
    let text = std::fs::read_to_string(&inc.target)
        .map_err(|e| format!("{} cannot be read: {e}", rel(&inc.target)))?;
    let lines: Vec<&str> = text.lines().collect();
    let keep = |ls: &[&str]| -> String {
        ls.iter()
            .filter(|l| anchor_start(l).is_none() && anchor_end(l).is_none())
            .copied()
            .collect::<Vec<_>>()
            .join("\n")
    };
    match &inc.selector {
        Selector::Whole => Ok(keep(&lines)),
        Selector::Lines(a, b) => {
            let end = b.unwrap_or(lines.len()).min(lines.len());
            if *a == 0 || *a > end {
                return Err(format!(
                    "lines {a}..{b:?} are outside {} ({} lines)",
                    rel(&inc.target),
                    lines.len()
                ));
            }
            Ok(keep(&lines[a - 1..end]))
        }
        Selector::Anchor(name) => {
            let start = lines
                .iter()
                .position(|l| anchor_start(l).as_deref() == Some(name))
                .ok_or_else(|| format!("{} has no `ANCHOR: {name}`", rel(&inc.target)))?;
            let end = lines[start..]
                .iter()
                .position(|l| anchor_end(l).as_deref() == Some(name))
                .ok_or_else(|| format!("{} has no `ANCHOR_END: {name}`", rel(&inc.target)))?;
            Ok(keep(&lines[start + 1..start + end]))
        }
    }
}

#[test]
fn every_include_names_a_file_and_anchor_that_give_text() {
    let incs = includes();
    assert!(!incs.is_empty(), "the chapters include nothing");
    let mut problems = Vec::new();
    for inc in &incs {
        let at = format!("{}:{}", rel(&inc.chapter), inc.line);
        match resolve(inc) {
            Err(e) => problems.push(format!("{at}: {e}")),
            Ok(text) if text.trim().is_empty() => problems.push(format!(
                "{at}: {} {:?} resolves to empty text",
                rel(&inc.target),
                inc.selector
            )),
            Ok(_) => {}
        }
    }
    assert!(
        problems.is_empty(),
        "broken includes:\n{}",
        problems.join("\n")
    );
}

/// An insta snapshot opens with a `---`-fenced header (source, expression); a chapter must
/// start its include after it, so readers see the output and not the bookkeeping.
#[test]
fn snapshot_includes_skip_the_insta_header() {
    let mut problems = Vec::new();
    for inc in includes() {
        if inc.target.extension().is_none_or(|e| e != "snap") {
            continue;
        }
        let at = format!("{}:{}", rel(&inc.chapter), inc.line);
        let text = read(&inc.target);
        let fences: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| *l == "---")
            .map(|(i, _)| i + 1)
            .take(2)
            .collect();
        let header_end = match fences.as_slice() {
            [1, end] => *end,
            _ => {
                problems.push(format!("{at}: {} has no insta header", rel(&inc.target)));
                continue;
            }
        };
        match inc.selector {
            Selector::Lines(a, _) if a > header_end => {}
            _ => problems.push(format!(
                "{at}: include {} from line {} on (`:{}:`), after its header",
                rel(&inc.target),
                header_end + 1,
                header_end + 1
            )),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Image paths in a chapter: Markdown `![alt](path)` and HTML `<img src="path">`.
fn images(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("![") {
        rest = &rest[i + 2..];
        if let Some(j) = rest.find("](") {
            let tail = &rest[j + 2..];
            if let Some(k) = tail.find(')') {
                let target = tail[..k].split_whitespace().next().unwrap_or("");
                out.push(target.to_string());
            }
        }
    }
    let mut rest = text;
    while let Some(i) = rest.find("<img") {
        rest = &rest[i + 4..];
        if let Some(j) = rest.find("src=\"") {
            let tail = &rest[j + 5..];
            if let Some(k) = tail.find('"') {
                out.push(tail[..k].to_string());
            }
        }
    }
    out
}

#[test]
fn every_image_a_chapter_shows_exists() {
    let mut problems = Vec::new();
    for chapter in markdown_files() {
        for img in images(&read(&chapter)) {
            if img.starts_with("http://") || img.starts_with("https://") {
                problems.push(format!(
                    "{}: {img}: figures must be files in chapters/figures/",
                    rel(&chapter)
                ));
                continue;
            }
            let path = normalize(&chapter.parent().unwrap().join(&img));
            if !path.starts_with(chapters_dir().join("figures")) || !img.ends_with(".svg") {
                problems.push(format!(
                    "{}: {img}: figures are SVG files in chapters/figures/",
                    rel(&chapter)
                ));
            }
            match std::fs::metadata(&path) {
                Ok(m) if m.len() > 0 => {}
                _ => problems.push(format!(
                    "{}: image {img} ({}) is missing or empty",
                    rel(&chapter),
                    rel(&path)
                )),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Code and outputs are never pasted into a chapter: a `rust` or `text` block holds one
/// `{{#include}}` and nothing else, so it is always the compiled code or the recorded output.
/// Shell commands (`sh`) are what the reader types, and are written out.
#[test]
fn code_and_output_blocks_are_included_not_pasted() {
    let mut problems = Vec::new();
    for chapter in markdown_files() {
        let text = read(&chapter);
        let mut lines = text.lines().enumerate();
        while let Some((n, line)) = lines.next() {
            let Some(info) = line.trim_start().strip_prefix("```") else {
                continue;
            };
            let lang = info.split(',').next().unwrap_or("").trim().to_string();
            let body: Vec<&str> = lines
                .by_ref()
                .map(|(_, l)| l)
                .take_while(|l| !l.trim_start().starts_with("```"))
                .filter(|l| !l.trim().is_empty())
                .collect();
            let included = body.len() == 1
                && body[0].trim().starts_with("{{#include ")
                && body[0].trim().ends_with("}}");
            if lang != "sh" && !included {
                problems.push(format!(
                    "{}:{}: a ```{info} block that is not one {{{{#include}}}}",
                    rel(&chapter),
                    n + 1
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every `(file, anchor)` marked in `src/` and `examples/`; fails on unbalanced markers.
fn anchors_in_code() -> BTreeSet<(PathBuf, String)> {
    let mut files = Vec::new();
    files_with_ext(&root().join("src"), "rs", &mut files);
    files_with_ext(&root().join("examples"), "rs", &mut files);
    let mut all = BTreeSet::new();
    let mut problems = Vec::new();
    for file in files {
        let mut open: BTreeMap<String, usize> = BTreeMap::new();
        for (n, line) in read(&file).lines().enumerate() {
            let at = format!("{}:{}", rel(&file), n + 1);
            if let Some(name) = anchor_end(line) {
                if open.remove(&name).is_none() {
                    problems.push(format!(
                        "{at}: ANCHOR_END: {name} without a matching ANCHOR"
                    ));
                }
            } else if let Some(name) = anchor_start(line) {
                if open.insert(name.clone(), n + 1).is_some() {
                    problems.push(format!("{at}: ANCHOR: {name} opened again before its end"));
                }
                if !all.insert((file.clone(), name.clone())) {
                    problems.push(format!("{at}: ANCHOR: {name} appears twice in this file"));
                }
            }
        }
        for (name, line) in open {
            problems.push(format!(
                "{}:{line}: ANCHOR: {name} is never closed with ANCHOR_END",
                rel(&file)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "unbalanced anchors:\n{}",
        problems.join("\n")
    );
    all
}

#[test]
fn every_anchor_in_the_code_is_balanced_and_shown_by_a_chapter() {
    let used: BTreeSet<(PathBuf, String)> = includes()
        .into_iter()
        .filter_map(|inc| match inc.selector {
            Selector::Anchor(name) => Some((inc.target, name)),
            _ => None,
        })
        .collect();
    let unused: Vec<String> = anchors_in_code()
        .into_iter()
        .filter(|a| !used.contains(a))
        .map(|(file, name)| format!("{}: {name}", rel(&file)))
        .collect();
    assert!(
        unused.is_empty(),
        "ANCHOR markers that no chapter includes; every marker is for the book, so include it\nfrom the chapter of its example (chapters/*.md), or drop the marker:\n{}",
        unused.join("\n")
    );
}

/// `[Title](file.md)` entries in SUMMARY.md; `[Title]()` is a draft and has no file yet.
fn summary_links() -> Vec<(String, String)> {
    let text = read(&chapters_dir().join("SUMMARY.md"));
    let mut out = Vec::new();
    for line in text.lines() {
        let mut rest = line;
        while let Some(i) = rest.find('[') {
            rest = &rest[i + 1..];
            let Some(j) = rest.find("](") else { break };
            let title = rest[..j].to_string();
            let tail = &rest[j + 2..];
            let Some(k) = tail.find(')') else { break };
            out.push((title, tail[..k].trim().to_string()));
            rest = &tail[k + 1..];
        }
    }
    out
}

#[test]
fn summary_links_only_chapters_that_exist_and_every_chapter_is_linked() {
    let links = summary_links();
    assert!(!links.is_empty(), "SUMMARY.md lists no chapter");
    let mut problems = Vec::new();
    let mut linked = BTreeSet::new();
    for (title, target) in &links {
        if target.is_empty() {
            continue; // a draft chapter
        }
        let path = normalize(&chapters_dir().join(target));
        if !path.is_file() {
            problems.push(format!("SUMMARY.md: [{title}]({target}): no such file"));
        }
        linked.insert(path);
    }
    for md in markdown_files() {
        if md.file_name().is_some_and(|n| n != "SUMMARY.md") && !linked.contains(&md) {
            problems.push(format!(
                "{} is not in SUMMARY.md, so mdBook never renders it",
                rel(&md)
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn bundled_config() -> Gpt2Config {
    Gpt2Config::from_file(&root().join("data/tiny-gpt2/config.json")).expect("the bundled config")
}

/// The cells of the Markdown table row of `file` that starts with `| {first} |`.
fn table_row(file: &str, first: &str) -> Vec<String> {
    let text = read(&chapters_dir().join(file));
    let row = text
        .lines()
        .find(|l| l.starts_with(&format!("| {first} |")))
        .unwrap_or_else(|| panic!("{file} has no table row for {first}"));
    row.trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_string())
        .collect()
}

/// Chapter 1's table of shape letters gives each letter's value for `gpt2` and for the bundled
/// model; they must be the configs' values.
#[test]
fn shape_letters_table_matches_the_configs() {
    let file = "01_architecture.md";
    for (name, cfg) in [("gpt2", Gpt2Config::gpt2()), ("bundled", bundled_config())] {
        let column = if name == "gpt2" { 2 } else { 3 };
        let cell = |letter: &str| table_row(file, letter)[column].clone();
        assert_eq!(cell("C"), cfg.n_embd.to_string(), "C of {name}");
        assert_eq!(cell("V"), group_digits(cfg.vocab_size), "V of {name}");
        assert_eq!(cell("nh"), cfg.n_head.to_string(), "nh of {name}");
        assert_eq!(cell("hs"), cfg.head_dim().to_string(), "hs of {name}");
        let positions = format!("at most {}", group_digits(cfg.n_positions));
        assert!(
            cell("T").ends_with(&positions),
            "T of {name}: {}",
            cell("T")
        );
        let prompt = gpt2_tutorial::Gpt2Tokenizer::bundled()
            .unwrap()
            .encode(gpt2_tutorial::tutorial::TUTORIAL_PROMPT)
            .unwrap();
        assert!(
            cell("T").starts_with(&prompt.len().to_string()),
            "T of {name}"
        );
    }
    let layers = format!(
        "`n_layer` ({} for `gpt2`, {} for the bundled model)",
        Gpt2Config::gpt2().n_layer,
        bundled_config().n_layer
    );
    assert!(
        read(&chapters_dir().join(file)).contains(&layers),
        "{file} lacks {layers}"
    );
}

/// Every text of an SVG figure, a `<text>` with its `<tspan>`s read as one string.
fn svg_texts(path: &Path) -> Vec<String> {
    let svg = read(path);
    let doc = roxmltree::Document::parse(&svg)
        .unwrap_or_else(|e| panic!("{}: not well-formed XML: {e}", rel(path)));
    assert_eq!(doc.root_element().tag_name().name(), "svg", "{}", rel(path));
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| {
            n.descendants()
                .filter(|d| d.is_text())
                .filter_map(|d| d.text())
                .collect::<String>()
        })
        .collect()
}

/// Every file in chapters/figures/ is a well-formed SVG that some chapter shows.
#[test]
fn every_figure_is_an_svg_a_chapter_shows() {
    let shown: BTreeSet<PathBuf> = markdown_files()
        .iter()
        .flat_map(|chapter| {
            images(&read(chapter))
                .into_iter()
                .map(|img| normalize(&chapter.parent().unwrap().join(img)))
        })
        .collect();
    let mut figures = Vec::new();
    files_with_ext(&chapters_dir().join("figures"), "svg", &mut figures);
    assert!(!figures.is_empty(), "no figures in chapters/figures/");
    for figure in &figures {
        assert!(!svg_texts(figure).is_empty(), "{} has no text", rel(figure));
        assert!(shown.contains(figure), "no chapter shows {}", rel(figure));
    }
}

/// The architecture figure is drawn by hand, so a test holds it to the code: the checkpoint's
/// module names, the shapes of attention that `src/model.rs` writes in its comments, and the
/// sizes in its legend.
#[test]
fn architecture_figure_names_the_modules_shapes_and_sizes_of_the_code() {
    let figure = chapters_dir().join("figures/gpt2_architecture.svg");
    let texts = svg_texts(&figure).join("\n");
    let model = read(&root().join("src/model.rs"));
    let gpt2 = Gpt2Config::gpt2();
    for shape in [
        "(B, T, C)",
        "(B, T, 3C)",
        "(B, nh, T, hs)",
        "(B, nh, S, hs)",
        "(B, nh, T, S)",
    ] {
        assert!(texts.contains(shape), "the figure lacks {shape}");
        assert!(
            model.contains(&format!("// {shape}")),
            "src/model.rs never says {shape}"
        );
    }
    let wpe = format!("wpe  ({}, C)", gpt2.n_positions);
    let legend = [
        format!("V = {}", group_digits(gpt2.vocab_size)),
        format!("hs = C / nh = {}", gpt2.head_dim()),
        format!(
            "gpt2: C = {}, nh = {}, n_layer = {}",
            gpt2.n_embd, gpt2.n_head, gpt2.n_layer
        ),
    ];
    let names = [
        "input_ids  (B, T)",
        "wte  (V, C)",
        "ln_1",
        "ln_2",
        "ln_f",
        "c_attn",
        "c_fc",
        "c_proj",
        "lm_head",
        "logits  (B, T, V)",
    ];
    for want in names
        .iter()
        .copied()
        .chain([wpe.as_str()])
        .chain(legend.iter().map(String::as_str))
    {
        assert!(texts.contains(want), "the figure lacks {want:?}");
    }
}

#[test]
fn the_include_parser_reads_what_mdbook_reads() {
    assert_eq!(parse_selector(""), Some(Selector::Whole));
    assert_eq!(
        parse_selector("load"),
        Some(Selector::Anchor("load".into()))
    );
    assert_eq!(parse_selector("4:"), Some(Selector::Lines(4, None)));
    assert_eq!(parse_selector(":9"), Some(Selector::Lines(1, Some(9))));
    assert_eq!(parse_selector("4:9"), Some(Selector::Lines(4, Some(9))));
    assert_eq!(parse_selector("7"), Some(Selector::Lines(7, Some(7))));
    assert_eq!(
        anchor_start("    // ANCHOR: lm_head"),
        Some("lm_head".into())
    );
    assert_eq!(anchor_end("// ANCHOR_END: lm_head"), Some("lm_head".into()));
    assert_eq!(anchor_start("// ANCHOR_END: lm_head"), None);
    assert_eq!(
        images("![top 10](figures/03_top10.svg) and <img src=\"figures/a.svg\">"),
        ["figures/03_top10.svg", "figures/a.svg"]
    );
}

/// A page as mdBook renders it: every include replaced by the text it gives (an include that
/// cannot be resolved fails `every_include_names_a_file_and_anchor_that_give_text`, not this).
fn rendered(chapter: &Path) -> String {
    let mut text = read(chapter);
    let mut incs: Vec<Include> = includes()
        .into_iter()
        .filter(|i| i.chapter == chapter)
        .collect();
    // Replace from the last line up, so earlier lines keep their numbers.
    incs.sort_by_key(|i| std::cmp::Reverse(i.line));
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for inc in incs {
        let body = resolve(&inc).unwrap_or_default();
        let line = &mut lines[inc.line - 1];
        // The whole `{{#include ...}}` directive on that line becomes the included text.
        if let (Some(a), Some(b)) = (line.find("{{#"), line.rfind("}}")) {
            line.replace_range(a..b + 2, &body);
        }
    }
    text = lines.join("\n");
    text
}

/// Words as `wc -w` counts them.
fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

/// The book teaches in a tutorial's length: the teaching chapters (the introduction and
/// chapters 1-7 with their sub-pages), counted as rendered - with every include expanded, code
/// and outputs counted like prose - stay within 16,000 words (the tutorial itself is ~4,000);
/// the performance page within 2,500; the README a front door of at most 150 lines.
/// `cargo test --test book budget -- --nocapture` prints each page's count.
#[test]
fn pages_stay_within_their_word_budget() {
    let mut teaching = 0;
    for chapter in markdown_files() {
        let name = chapter.file_name().unwrap().to_string_lossy().to_string();
        let words = word_count(&rendered(&chapter));
        println!("{name}: {words} words rendered");
        let starts_with_digit = name.chars().next().is_some_and(|c| c.is_ascii_digit());
        if name == "introduction.md" || starts_with_digit {
            teaching += words;
        }
    }
    println!("teaching chapters: {teaching} words rendered");
    let performance = word_count(&rendered(&chapters_dir().join("performance.md")));
    let readme_lines = read(&root().join("README.md")).lines().count();
    println!("performance.md: {performance} words; README.md: {readme_lines} lines");
    assert!(
        teaching <= 16_000,
        "the teaching chapters render {teaching} words: at most 16,000"
    );
    assert!(
        performance <= 2_500,
        "the performance page renders {performance} words: at most 2,500"
    );
    assert!(
        readme_lines <= 150,
        "README.md has {readme_lines} lines: at most 150"
    );
}
