//! The data of chapter 6: parquet reading and its errors, the jokes dataset, the tutorial's
//! packing in both modes, and the epoch order. The packing of the bundled jokes is compared
//! with the PyTorch reference in `tests/fixtures/jokes.json`
//! (`python scripts/reference/make_jokes_fixtures.py`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gpt2_tutorial::config::EOS_TOKEN_ID;
use gpt2_tutorial::data::{
    check_max_seq_len, epoch_order, joke_text, parquet_files, read_columns, tokenize_jokes,
    ColumnKind, Jokes, JokesSource, Packer, PackingMode, JOKES_DATASET,
};
use gpt2_tutorial::{Error, Gpt2Tokenizer};
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

const JOKES_FORMAT: u64 = 1;
const REGENERATE: &str =
    "python scripts/reference/make_jokes_fixtures.py data/jokes-sample/jokes.parquet data/tiny-gpt2";

// ---------------------------------------------------------------------------------------------
// Helpers: a fresh temporary directory, and small parquet files written with the parquet crate.

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("gpt2-tutorial-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

/// One column's values for [`write_parquet`]; `None` is a null.
enum Col<'a> {
    Text(&'a str, Vec<Option<&'a str>>),
    Int(&'a str, Vec<Option<i64>>),
}

/// Writes an uncompressed parquet file with optional (nullable) columns.
fn write_parquet(path: &Path, cols: &[Col]) {
    let fields: Vec<String> = cols
        .iter()
        .map(|c| match c {
            Col::Text(name, _) => format!("OPTIONAL BYTE_ARRAY {name} (UTF8);"),
            Col::Int(name, _) => format!("OPTIONAL INT64 {name};"),
        })
        .collect();
    let schema = parse_message_type(&format!("message schema {{ {} }}", fields.join(" ")))
        .expect("a valid schema");
    let props = Arc::new(WriterProperties::builder().build());
    let file = File::create(path).expect("create the parquet file");
    let mut writer = SerializedFileWriter::new(file, Arc::new(schema), props).expect("a writer");
    let mut group = writer.next_row_group().expect("a row group");
    for c in cols {
        let mut col = group.next_column().expect("next column").expect("a column");
        match c {
            Col::Text(_, values) => {
                let defs: Vec<i16> = values.iter().map(|v| i16::from(v.is_some())).collect();
                let present: Vec<ByteArray> = values
                    .iter()
                    .flatten()
                    .map(|s| ByteArray::from(*s))
                    .collect();
                col.typed::<ByteArrayType>()
                    .write_batch(&present, Some(&defs), None)
                    .expect("write strings");
            }
            Col::Int(_, values) => {
                let defs: Vec<i16> = values.iter().map(|v| i16::from(v.is_some())).collect();
                let present: Vec<i64> = values.iter().flatten().copied().collect();
                col.typed::<Int64Type>()
                    .write_batch(&present, Some(&defs), None)
                    .expect("write ints");
            }
        }
        col.close().expect("close the column");
    }
    group.close().expect("close the row group");
    writer.close().expect("close the file");
}

fn load_local(path: &Path) -> gpt2_tutorial::Result<Jokes> {
    Jokes::load(&JokesSource::Local(path.to_path_buf()))
}

// ---------------------------------------------------------------------------------------------
// Packing on small id lists.

fn pack_all(mode: PackingMode, max: usize, jokes: &[Vec<u32>]) -> (Vec<Vec<u32>>, Packer) {
    let mut packer = Packer::new(mode, max).expect("a packer");
    let order: Vec<usize> = (0..jokes.len()).collect();
    let mut out = packer.pack_epoch(jokes, &order).expect("pack");
    out.extend(packer.finish());
    (out, packer)
}

fn small_jokes() -> Vec<Vec<u32>> {
    vec![
        vec![1, 2, 3],
        vec![4, 5],
        vec![6, 7, 8, 9],
        vec![10, 11, 12, 13, 14, 15, 16], // 7 tokens: longer than 6, skipped
        vec![17, 18],
    ]
}

#[test]
fn tutorial_packing_drops_first_tokens_and_the_last_buffer() {
    let (seqs, packer) = pack_all(PackingMode::Tutorial, 6, &small_jokes());
    // [1,2,3] + [4,5][1..] = [1,2,3,5]; [6,7,8,9] does not fit (4 + 4 > 6) so it is emitted;
    // [17,18] fits (4 + 2 = 6) and loses 17; the last buffer [6,7,8,9,18] is dropped.
    assert_eq!(seqs, vec![vec![1, 2, 3, 5]]);
    assert_eq!(packer.jokes_skipped(), 1);
    assert_eq!(packer.sequences(), 1);
    assert_eq!(packer.jokes_packed(), 4);
    assert!(packer.buffer().is_empty(), "finish empties the buffer");
}

#[test]
fn full_packing_keeps_every_token_and_emits_the_last_buffer() {
    let (seqs, packer) = pack_all(PackingMode::Full, 6, &small_jokes());
    assert_eq!(seqs, vec![vec![1, 2, 3, 4, 5], vec![6, 7, 8, 9, 17, 18]]);
    assert_eq!(packer.jokes_skipped(), 1);
    assert_eq!(packer.sequences(), 2);
}

#[test]
fn tutorial_fit_test_counts_the_whole_joke() {
    // Appending [5,6,7][1..] would make 6 tokens, within max 6, but the tutorial tests
    // 4 + 3 > 6 and emits the buffer.
    let jokes = vec![vec![1, 2, 3, 4], vec![5, 6, 7]];
    let mut packer = Packer::new(PackingMode::Tutorial, 6).unwrap();
    let seqs = packer.pack_epoch(&jokes, &[0, 1]).unwrap();
    assert_eq!(seqs, vec![vec![1, 2, 3, 4]]);
    assert_eq!(packer.buffer(), &[5, 6, 7]);
    assert_eq!(packer.buffered_jokes(), 1);
    // A joke of exactly max_seq_len is kept.
    let mut packer = Packer::new(PackingMode::Tutorial, 3).unwrap();
    assert_eq!(
        packer.pack_epoch(&[vec![1, 2, 3]], &[0]).unwrap(),
        Vec::<Vec<u32>>::new()
    );
    assert_eq!(packer.jokes_skipped(), 0);
    assert_eq!(packer.buffer(), &[1, 2, 3]);
}

#[test]
fn the_buffer_carries_over_epochs_and_survives_a_save() {
    let jokes = vec![vec![1, 2, 3], vec![4, 5, 6, 7]];
    for mode in [PackingMode::Tutorial, PackingMode::Full] {
        let mut packer = Packer::new(mode, 6).unwrap();
        let epoch0 = packer.pack_epoch(&jokes, &[0, 1]).unwrap();
        assert_eq!(epoch0, vec![vec![1, 2, 3]], "{mode:?}");
        assert_eq!(packer.buffer(), &[4, 5, 6, 7], "{mode:?}");

        // Save and restore mid-run, as a checkpoint does.
        let saved = serde_json::to_string(&packer).unwrap();
        let mut restored: Packer = serde_json::from_str(&saved).unwrap();
        assert_eq!(restored, packer);

        // Epoch 1 starts with epoch 0's buffer: [4,5,6,7] is its first sequence.
        let epoch1 = packer.pack_epoch(&jokes, &[0, 1]).unwrap();
        assert_eq!(epoch1, vec![vec![4, 5, 6, 7], vec![1, 2, 3]], "{mode:?}");
        assert_eq!(restored.pack_epoch(&jokes, &[0, 1]).unwrap(), epoch1);
        assert_eq!(restored, packer);
        assert_eq!(packer.sequences(), 3);
    }
    // The state's JSON names the mode plainly.
    let json = serde_json::to_value(Packer::new(PackingMode::Tutorial, 500).unwrap()).unwrap();
    assert_eq!(json["mode"], "tutorial");
    assert_eq!(json["max_seq_len"], 500);
}

#[test]
fn packing_rejects_bad_lengths_and_orders() {
    assert!(matches!(
        Packer::new(PackingMode::Tutorial, 0),
        Err(Error::InvalidArgument(_))
    ));
    let mut packer = Packer::new(PackingMode::Full, 8).unwrap();
    let err = packer.pack_epoch(&[vec![1]], &[0, 1]).unwrap_err();
    assert!(
        err.to_string().contains("joke 1 but there are 1 jokes"),
        "{err}"
    );
}

#[test]
fn max_seq_len_below_every_joke_is_an_error_naming_the_shortest() {
    let jokes = vec![vec![1; 12], vec![2; 9], vec![3; 30]];
    let err = check_max_seq_len(&jokes, 8).unwrap_err();
    assert!(
        matches!(
            err,
            Error::SeqLenTooShort {
                max_seq_len: 8,
                shortest: 9
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("shortest has 9 tokens") && msg.contains("at least 9"),
        "{msg}"
    );
    assert_eq!(check_max_seq_len(&jokes, 12).unwrap(), 2);
    assert!(matches!(
        check_max_seq_len(&[], 500),
        Err(Error::EmptyDataset { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Epoch order.

#[test]
fn epoch_order_is_a_seeded_permutation_per_epoch() {
    let n = 283;
    let a = epoch_order(n, 42, 0, true);
    assert_eq!(
        a,
        epoch_order(n, 42, 0, true),
        "same seed and epoch, same order"
    );
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "a permutation");
    assert_ne!(a, (0..n).collect::<Vec<_>>(), "shuffled");
    let b = epoch_order(n, 42, 1, true);
    assert_ne!(a, b, "each epoch has its own order");
    assert_ne!(a, epoch_order(n, 43, 0, true), "the seed matters");
    assert_eq!(epoch_order(n, 42, 3, false), (0..n).collect::<Vec<_>>());
    assert!(epoch_order(0, 42, 0, true).is_empty());
    // Pinned: a resumed run (or a new build) must draw this same order. If a `rand` or
    // `rand_chacha` upgrade changes it, checkpoints made before no longer resume exactly.
    assert_eq!(
        epoch_order(10, 1337, 0, true),
        PINNED_ORDER,
        "epoch_order(10, 1337, 0) changed"
    );
}

const PINNED_ORDER: [usize; 10] = [1, 8, 2, 3, 7, 4, 5, 6, 0, 9];

// ---------------------------------------------------------------------------------------------
// Parquet and its errors.

#[test]
fn a_missing_file_names_the_path_and_what_to_do() {
    let path = PathBuf::from("no/such/jokes.parquet");
    let err = load_local(&path).unwrap_err();
    assert!(
        matches!(&err, Error::MissingDataFile { path: p } if *p == path),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("no/such/jokes.parquet") && msg.contains("bundled"),
        "{msg}"
    );
}

#[test]
fn a_file_without_a_joke_column_lists_its_columns() {
    let dir = temp_dir("no-joke-column");
    let path = dir.join("reviews.parquet");
    write_parquet(
        &path,
        &[
            Col::Int("ID", vec![Some(1), Some(2)]),
            Col::Text("text", vec![Some("great"), Some("awful")]),
        ],
    );
    let err = load_local(&path).unwrap_err();
    match &err {
        Error::MissingColumn {
            column, available, ..
        } => {
            assert_eq!(column, "Joke");
            assert_eq!(available, &["ID", "text"]);
        }
        other => panic!("expected MissingColumn, got {other}"),
    }
    assert!(
        err.to_string().contains("its columns are ID, text"),
        "{err}"
    );
    // The same file read for chapter 7's columns works, rows aligned.
    let cols = read_columns(
        &path,
        &[("text", ColumnKind::Text), ("ID", ColumnKind::Int)],
    )
    .unwrap();
    assert_eq!(cols.text("text").unwrap(), ["great", "awful"]);
    assert_eq!(cols.ints("ID").unwrap(), [1, 2]);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_column_of_the_wrong_type_says_what_it_holds() {
    let dir = temp_dir("wrong-type");
    let path = dir.join("jokes.parquet");
    write_parquet(&path, &[Col::Int("Joke", vec![Some(7)])]);
    let err = load_local(&path).unwrap_err();
    assert!(
        matches!(&err, Error::ColumnType { column, found, expected: "strings", .. }
            if column == "Joke" && found == "integers"),
        "{err}"
    );
    let err = read_columns(&path, &[("Joke", ColumnKind::Int)]).map(|c| c.len());
    assert_eq!(err.unwrap(), 1);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn null_and_empty_jokes_are_skipped_and_counted() {
    let dir = temp_dir("nulls");
    let path = dir.join("jokes.parquet");
    write_parquet(
        &path,
        &[
            Col::Int("ID", vec![Some(1), Some(2), Some(3), Some(4)]),
            Col::Text("Joke", vec![Some("a"), None, Some(""), Some("b")]),
        ],
    );
    let jokes = load_local(&path).unwrap();
    assert_eq!(jokes.jokes, ["a", "b"]);
    assert_eq!(jokes.skipped, 2);
    assert!(jokes.to_string().contains("2 null or empty rows skipped"));
    // Rows stay aligned across columns: the nulls drop the whole row.
    let cols = read_columns(
        &path,
        &[("ID", ColumnKind::Int), ("Joke", ColumnKind::Text)],
    )
    .unwrap();
    assert_eq!(cols.ints("ID").unwrap(), [1, 4]);
    assert_eq!((cols.rows_read, cols.skipped, cols.len()), (4, 2, 2));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn an_empty_dataset_is_an_error() {
    let dir = temp_dir("empty");
    let no_rows = dir.join("no-rows.parquet");
    write_parquet(&no_rows, &[Col::Text("Joke", vec![])]);
    let err = load_local(&no_rows).unwrap_err();
    assert!(
        matches!(&err, Error::EmptyDataset { reason, .. } if reason.contains("no rows")),
        "{err}"
    );
    let all_null = dir.join("all-null.parquet");
    write_parquet(&all_null, &[Col::Text("Joke", vec![None, Some("")])]);
    let err = load_local(&all_null).unwrap_err();
    assert!(
        matches!(&err, Error::EmptyDataset { reason, .. } if reason.contains("all 2 rows")),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_file_that_is_not_parquet_is_an_error() {
    let dir = temp_dir("not-parquet");
    let path = dir.join("jokes.parquet");
    std::fs::write(&path, "ID,Joke\n1,a csv file\n").unwrap();
    let err = load_local(&path).unwrap_err();
    assert!(matches!(&err, Error::BadParquet { .. }), "{err}");
    assert!(
        err.to_string().contains("not a readable parquet file"),
        "{err}"
    );
    let empty = dir.join("empty.parquet");
    std::fs::write(&empty, "").unwrap();
    assert!(matches!(load_local(&empty), Err(Error::BadParquet { .. })));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn an_unsupported_compression_is_named() {
    // This build reads only uncompressed and snappy parquet, so it cannot write zstd either:
    // write an uncompressed file and change the `Joke` column's codec in the footer. In
    // thrift's compact encoding the column's path list `["Joke"]` is followed by the codec
    // field, `0x15` (field 4, i32) and its zig-zag value: 0 = uncompressed, 12 = zstd (6).
    let dir = temp_dir("zstd");
    let path = dir.join("jokes.parquet");
    write_parquet(&path, &[Col::Text("Joke", vec![Some("a")])]);
    let mut bytes = std::fs::read(&path).unwrap();
    let pattern = b"\x18\x04Joke\x15\x00";
    let at = bytes
        .windows(pattern.len())
        .rposition(|w| w == pattern)
        .expect("the column's metadata in the footer");
    bytes[at + pattern.len() - 1] = 12;
    std::fs::write(&path, bytes).unwrap();
    let err = load_local(&path).unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedCompression { column, codec, .. } if column == "Joke" && codec == "zstd"),
        "{err}"
    );
    assert!(err.to_string().contains("snappy"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_directory_of_parquet_files_is_read_in_order() {
    let dir = temp_dir("dir");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    write_parquet(
        &dir.join("data/train-00001-of-00002.parquet"),
        &[Col::Text("Joke", vec![Some("second")])],
    );
    write_parquet(
        &dir.join("data/train-00000-of-00002.parquet"),
        &[Col::Text("Joke", vec![Some("first")])],
    );
    std::fs::write(dir.join("README.md"), "not data").unwrap();
    assert_eq!(parquet_files(&dir).unwrap().len(), 2);
    let jokes = load_local(&dir).unwrap();
    assert_eq!(jokes.jokes, ["first", "second"]);
    let empty = temp_dir("dir-empty");
    assert!(matches!(
        load_local(&empty),
        Err(Error::NoParquetFiles { .. })
    ));
    std::fs::remove_dir_all(dir).ok();
    std::fs::remove_dir_all(empty).ok();
}

// ---------------------------------------------------------------------------------------------
// The jokes dataset.

#[test]
fn data_sources_parse() {
    assert_eq!(
        "hub".parse::<JokesSource>().unwrap(),
        JokesSource::Hub(JOKES_DATASET.into())
    );
    assert_eq!(
        JokesSource::default(),
        JokesSource::Hub(JOKES_DATASET.into())
    );
    assert_eq!(
        "hub:me/my-jokes".parse::<JokesSource>().unwrap(),
        JokesSource::Hub("me/my-jokes".into())
    );
    assert_eq!(
        "bundled".parse::<JokesSource>().unwrap(),
        JokesSource::Bundled
    );
    assert_eq!(
        "my/jokes.parquet".parse::<JokesSource>().unwrap(),
        JokesSource::Local("my/jokes.parquet".into())
    );
    assert!(matches!(
        "".parse::<JokesSource>(),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        "hub:nope".parse::<JokesSource>(),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn the_bundled_sample_has_283_jokes_ending_in_50256() {
    let jokes = Jokes::load(&JokesSource::Bundled).unwrap();
    assert_eq!(jokes.len(), 283);
    assert_eq!(jokes.skipped, 0);
    assert!(
        jokes.origin.starts_with("bundled sample"),
        "{}",
        jokes.origin
    );
    let tokenizer = Gpt2Tokenizer::bundled().unwrap();
    assert_eq!(tokenizer.token_to_id("<|endoftext|>"), Some(50256));
    let text = joke_text(&jokes.jokes[0]);
    assert!(text.starts_with("JOKE: ") && text.ends_with("<|endoftext|>"));
    let ids = tokenizer.encode(&text).unwrap();
    assert_eq!(ids.last(), Some(&EOS_TOKEN_ID));
    assert_eq!(
        ids.iter().filter(|&&t| t == EOS_TOKEN_ID).count(),
        1,
        "<|endoftext|> is one token"
    );
    let all = jokes.tokenize(&tokenizer).unwrap();
    assert_eq!(all.len(), 283);
    assert_eq!(all[0], ids);
    assert!(all.iter().all(|t| t.last() == Some(&EOS_TOKEN_ID)));
}

#[test]
fn a_tokenizer_without_endoftext_is_an_error() {
    // A tokenizer whose vocabulary lacks <|endoftext|>: GPT-2's with the added token removed.
    let path = gpt2_tutorial::tokenizer::bundled_tokenizer_path().unwrap();
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["added_tokens"] = serde_json::json!([]);
    json["model"]["vocab"]
        .as_object_mut()
        .unwrap()
        .remove("<|endoftext|>");
    let dir = temp_dir("tokenizer");
    let file = dir.join("tokenizer.json");
    std::fs::write(&file, json.to_string()).unwrap();
    let tokenizer = Gpt2Tokenizer::from_file(&file).unwrap();
    let err = tokenize_jokes(&tokenizer, &["a joke".to_string()]).unwrap_err();
    assert!(err.to_string().contains("50256"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

/// The Hub source, without a network: found in a Hugging Face cache, or (with nothing cached)
/// the bundled sample and a note. One test, since both set the process's environment.
#[test]
fn the_hub_source_uses_the_cache_or_falls_back_offline() {
    let home = temp_dir("hf-home");
    std::env::set_var("HF_HOME", &home);
    std::env::set_var("HF_HUB_OFFLINE", "1");

    // Nothing cached: the default source falls back with a note; asked directly, an error.
    let (jokes, note) = Jokes::load_or_bundled(&JokesSource::default()).unwrap();
    assert_eq!(jokes.len(), 283);
    let note = note.expect("a note saying the bundled sample is used");
    assert!(
        note.contains(JOKES_DATASET) && note.contains("HF_HUB_OFFLINE"),
        "{note}"
    );
    assert!(!note.contains('\n'), "one line");
    assert!(matches!(
        Jokes::load(&JokesSource::default()),
        Err(Error::HubDataset { .. })
    ));

    // A cached snapshot, laid out as hf-hub and huggingface_hub write it, is found offline.
    let repo = home.join("hub/datasets--Maximofn--short-jokes-dataset");
    let snapshot = repo.join("snapshots/0123abcd/data");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    write_parquet(
        &snapshot.join("train-00000-of-00001.parquet"),
        &[
            Col::Int("ID", vec![Some(1), Some(2)]),
            Col::Text("Joke", vec![Some("cached one"), Some("cached two")]),
        ],
    );
    let (jokes, note) = Jokes::load_or_bundled(&JokesSource::default()).unwrap();
    assert!(note.is_none());
    assert_eq!(jokes.jokes, ["cached one", "cached two"]);
    assert_eq!(jokes.origin, JOKES_DATASET);

    std::env::remove_var("HF_HUB_OFFLINE");
    std::env::remove_var("HF_HOME");
    std::fs::remove_dir_all(home).ok();
}

// ---------------------------------------------------------------------------------------------
// Against the PyTorch reference.

fn reference() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jokes.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; regenerate with {REGENERATE}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).expect("jokes.json parses");
    assert_eq!(
        json["format_version"].as_u64(),
        Some(JOKES_FORMAT),
        "jokes.json has another format; regenerate with {REGENERATE}"
    );
    json
}

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("a list of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

#[test]
fn bundled_tokenization_matches_the_reference() {
    let reference = reference();
    let tok = &reference["tokenizer"];
    let jokes = Jokes::load(&JokesSource::Bundled).unwrap();
    let all = jokes.tokenize(&Gpt2Tokenizer::bundled().unwrap()).unwrap();
    assert_eq!(tok["num_jokes"].as_u64(), Some(all.len() as u64));
    let lens: Vec<usize> = all.iter().map(Vec::len).collect();
    let want: Vec<usize> = ids_of(&tok["all_lens"])
        .into_iter()
        .map(|l| l as usize)
        .collect();
    assert_eq!(lens, want, "token counts of every joke");
    for example in tok["examples"].as_array().unwrap() {
        let joke = example["joke"].as_str().unwrap();
        let i = jokes
            .jokes
            .iter()
            .position(|j| j == joke)
            .expect("the example joke");
        assert_eq!(joke_text(joke), example["text"].as_str().unwrap());
        assert_eq!(all[i], ids_of(&example["ids"]), "ids of joke {i}");
    }
}

#[test]
fn bundled_packing_matches_the_pytorch_reference() {
    let reference = reference();
    let jokes = Jokes::load(&JokesSource::Bundled).unwrap();
    let all = jokes.tokenize(&Gpt2Tokenizer::bundled().unwrap()).unwrap();
    let order = epoch_order(all.len(), 0, 0, false);
    let packing = &reference["packing"];
    for max in packing["max_seq_lens"].as_array().unwrap() {
        let max = max.as_u64().unwrap() as usize;
        for (mode, name) in [
            (PackingMode::Tutorial, "tutorial"),
            (PackingMode::Full, "full"),
        ] {
            let want = &packing[max.to_string()][name];
            let mut packer = Packer::new(mode, max).unwrap();
            let mut seqs = packer.pack_epoch(&all, &order).unwrap();
            let leftover = packer.buffer().len();
            seqs.extend(packer.finish());
            let what = format!("max_seq_len {max}, {name}");
            assert_eq!(
                seqs.len() as u64,
                want["num_sequences"].as_u64().unwrap(),
                "{what}"
            );
            let lens: Vec<u32> = seqs.iter().map(|s| s.len() as u32).collect();
            assert_eq!(lens, ids_of(&want["sequence_lens"]), "{what}: lengths");
            assert_eq!(
                packer.jokes_skipped() as u64,
                want["skipped_too_long"].as_u64().unwrap(),
                "{what}: skipped"
            );
            assert_eq!(
                leftover as u64,
                want["leftover_len"].as_u64().unwrap(),
                "{what}"
            );
            let want_seqs = want["sequences"].as_array().unwrap();
            assert_eq!(want_seqs.len(), seqs.len(), "{what}: sequences");
            for (k, (got, want)) in seqs.iter().zip(want_seqs).enumerate() {
                assert_eq!(got, &ids_of(want), "{what}: sequence {k}");
            }
        }
    }
}

/// A library's errors name the argument, not the examples' command-line flags.
#[test]
fn empty_sources_and_zero_lengths_are_named_as_arguments() {
    let jokes = "".parse::<JokesSource>().unwrap_err().to_string();
    let imdb = ""
        .parse::<gpt2_tutorial::data::ImdbSource>()
        .unwrap_err()
        .to_string();
    for text in [&jokes, &imdb] {
        assert!(
            text.contains("dataset source is empty") && !text.contains("--"),
            "{text}"
        );
    }
    let tokenizer = Gpt2Tokenizer::bundled().unwrap();
    let e =
        gpt2_tutorial::data::collate::tokenize_truncated(&tokenizer, &["a".into()], 0).unwrap_err();
    assert!(
        matches!(
            e,
            Error::ZeroSize {
                what: "max_length",
                ..
            }
        ),
        "{e}"
    );
    let e = gpt2_tutorial::device::parse_device("gpu")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("invalid argument: device \"gpu\""), "{e}");
}
