//! Fine-tune runs that cannot lose work (chapters 6 and 7's examples as a user runs them, on
//! the bundled model): one run per output folder, no fresh run over another run's files
//! unless asked, Ctrl-C that saves and resumes, a divergence guard that never blesses a bad
//! checkpoint, `--resume` that changes the schedule and nothing else, errors that name paths.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use gpt2_tutorial::train::{load_checkpoint, RunDir, LOCK_FILE};
use gpt2_tutorial::Error;

fn scratch(tag: &str) -> Scratch {
    Scratch::new(&format!("gpt2-runs-{tag}"))
}

fn jokes_command(out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(example_binary("06_jokes_finetune"));
    cmd.args(["--quiet", "--device", "cpu", "--out"])
        .arg(out)
        .args(extra)
        .env("HF_HUB_OFFLINE", "1")
        .env("RUST_BACKTRACE", "0")
        .current_dir(root());
    cmd
}

fn run_jokes(out: &Path, extra: &[&str]) -> Output {
    jokes_command(out, extra).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A small run: the tutorial's recipe (whose schedule does not depend on the run's length, so
/// runs of different lengths share their first steps), one short sequence per step, in f32 (the
/// recipe's f16 default is pinned by tests/finetune.rs; f32 is several times faster on a CPU).
const SMALL: [&str; 8] = [
    "--recipe",
    "tutorial",
    "--dtype",
    "f32",
    "--max-seq-len",
    "24",
    "--accumulate",
    "1",
];

/// [`SMALL`], six optimizer steps long.
fn short() -> Vec<&'static str> {
    [SMALL.as_slice(), &["--max-steps", "6"]].concat()
}

/// The losses a run's `history.csv` holds.
fn losses(out: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(out.join("history.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect()
}

fn weights_equal(a: &Path, b: &Path) {
    let (a, b) = (
        load_checkpoint(a, &candle_core::Device::Cpu).unwrap(),
        load_checkpoint(b, &candle_core::Device::Cpu).unwrap(),
    );
    for name in a.weights.names() {
        let d = max_abs_diff(a.weights.get(&name).unwrap(), b.weights.get(&name).unwrap());
        assert_eq!(d, 0.0, "{name}");
    }
}

/// Waits until `child` holds the lock of `out` (its process id is in the lock file).
fn wait_for_lock(child: &mut Child, out: &Path) {
    let started = Instant::now();
    let pid = child.id().to_string();
    while std::fs::read_to_string(out.join(LOCK_FILE)).ok().as_deref() != Some(pid.as_str()) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before taking its folder"
        );
        assert!(started.elapsed() < Duration::from_secs(60), "no lock");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_second_run_on_a_folder_in_use_is_refused_at_once() {
    let dir = scratch("in-use");
    let out = dir.join("out");
    // Held by this process: the example refuses, naming the folder and this process.
    {
        let _held = RunDir::fresh(&out, false).unwrap();
        let again = RunDir::fresh(&out, false).unwrap_err();
        assert!(
            matches!(again, Error::OutputInUse { pid: Some(p), .. } if p == std::process::id())
        );
        let refused = run_jokes(&out, &short());
        assert!(!refused.status.success());
        let msg = stderr(&refused);
        assert!(
            msg.contains(&path_str(&out))
                && msg.contains(&format!("process {}", std::process::id())),
            "{msg}"
        );
    }
    // Two runs of the example: the second is refused while the first runs, and the first ends
    // as a run alone does.
    let mut first = jokes_command(&out, &SMALL)
        .args(["--max-steps", "8"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_lock(&mut first, &out);
    let second = run_jokes(&out, &["--seed", "7", "--max-steps", "8"]);
    let first_status = first.wait().unwrap();
    assert!(!second.status.success(), "the second run was not refused");
    assert!(
        stderr(&second).contains("in use by another run"),
        "{}",
        stderr(&second)
    );
    assert!(first_status.success());
    let solo = dir.join("solo");
    let alone = jokes_command(&solo, &SMALL)
        .args(["--max-steps", "8"])
        .output()
        .unwrap();
    assert!(alone.status.success());
    weights_equal(&out.join("checkpoint-8"), &solo.join("checkpoint-8"));
    assert_eq!(losses(&out), losses(&solo));
    // A killed run's lock dies with it: the next run can take the folder.
    let killed = dir.join("killed");
    let mut run = jokes_command(&killed, &SMALL)
        .args(["--max-steps", "100000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_lock(&mut run, &killed);
    run.kill().unwrap(); // SIGKILL
    run.wait().unwrap();
    RunDir::fresh(&killed, true).unwrap();
}

#[test]
fn a_fresh_run_into_a_used_folder_is_refused_unless_overwrite() {
    let dir = scratch("used");
    let out = dir.join("out");
    assert!(run_jokes(&out, &short()).status.success());
    let before = std::fs::read(out.join("checkpoint-6/model.safetensors")).unwrap();
    let refused = run_jokes(&out, &["--seed", "7", "--max-steps", "3"]);
    assert!(!refused.status.success());
    let msg = stderr(&refused);
    assert!(
        msg.contains("checkpoint-6") && msg.contains("--resume") && msg.contains("--overwrite"),
        "{msg}"
    );
    // Untouched: same files, same bytes.
    assert_eq!(
        std::fs::read(out.join("checkpoint-6/model.safetensors")).unwrap(),
        before
    );
    // --overwrite removes the old run's files first: none of its checkpoints stays.
    let over = run_jokes(&out, &["--seed", "7", "--max-steps", "3", "--overwrite"]);
    assert!(over.status.success(), "{}", stderr(&over));
    assert!(out.join("checkpoint-3").is_dir() && !out.join("checkpoint-6").exists());
    // A resumed run may write into its own folder.
    let resumed = run_jokes(
        &out,
        &[
            "--resume",
            &path_str(&out.join("checkpoint-3")),
            "--max-steps",
            "5",
        ],
    );
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(out.join("checkpoint-5").is_dir());
}

#[test]
fn ctrl_c_saves_where_the_run_stands_and_resume_continues_the_same_losses() {
    let dir = scratch("sigint");
    // Two sequences a step, so the signal often comes in the middle of one: the saved
    // checkpoint is then the last step's, and its sequences are trained again.
    let flags = [&SMALL[..6], &["--accumulate", "2"]].concat();
    // Retried, later, if the signal came before the first step.
    for wait_ms in [2000, 6000] {
        let out = dir.join(format!("out-{wait_ms}"));
        let mut run = jokes_command(&out, &flags)
            .args(["--max-steps", "100000"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_lock(&mut run, &out);
        std::thread::sleep(Duration::from_millis(wait_ms));
        let pid = run.id().to_string();
        Command::new("kill").args(["-INT", &pid]).status().unwrap();
        let stopped = run.wait_with_output().unwrap();
        let msg = stderr(&stopped);
        assert_eq!(stopped.status.code(), Some(130), "{msg}");
        if msg.contains("before its first optimizer step") {
            continue;
        }
        assert!(msg.contains("Saved") && msg.contains("--resume"), "{msg}");
        assert!(out.join("history.csv").is_file() && out.join("loss_lr.svg").is_file());
        let checkpoint = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("checkpoint-")
            })
            .expect("the stop saved a checkpoint");
        assert!(msg.contains(&path_str(&checkpoint)), "{msg}");
        let name = checkpoint
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let done: usize = name.trim_start_matches("checkpoint-").parse().unwrap();
        assert_eq!(losses(&out).len(), done, "the history holds the steps made");
        // Resumed a few steps past the stop, against a run never interrupted.
        let end = (done + 3).to_string();
        let resume = path_str(&checkpoint);
        let resumed = run_jokes(&out, &["--resume", &resume, "--max-steps", &end]);
        assert!(resumed.status.success(), "{}", stderr(&resumed));
        let whole = dir.join(format!("whole-{wait_ms}"));
        let alone = jokes_command(&whole, &flags)
            .args(["--max-steps", &end])
            .output()
            .unwrap();
        assert!(alone.status.success(), "{}", stderr(&alone));
        assert_eq!(losses(&out), losses(&whole));
        let last = format!("checkpoint-{end}");
        weights_equal(&out.join(&last), &whole.join(&last));
        return;
    }
    panic!("no run could be interrupted after a step");
}

/// The tutorial's recipe in pure f16 at an absurd learning rate: the weights overflow. The
/// guard stops the run naming the last checkpoint whose weights are all finite, and that
/// checkpoint resumes with a lower learning rate.
#[test]
fn a_diverging_run_names_a_finite_checkpoint_that_resumes_with_a_lower_lr() {
    let dir = scratch("f16");
    let out = dir.join("out");
    let flags = [
        "--recipe",
        "tutorial",
        "--dtype",
        "f16",
        "--lr",
        "1e8",
        "--warmup",
        "100",
        "--accumulate",
        "2",
        "--max-seq-len",
        "128",
        "--save-steps",
        "1",
    ];
    let diverged = run_jokes(&out, &flags);
    assert!(!diverged.status.success());
    let msg = stderr(&diverged);
    let named = msg
        .split_whitespace()
        .find(|w| w.contains("checkpoint-"))
        .map(|w| PathBuf::from(w.trim_end_matches([':', ',', '.'])));
    let Some(named) = named else {
        // No step survived: then no checkpoint may exist either.
        assert!(msg.contains("no checkpoint had been written"), "{msg}");
        assert!(!std::fs::read_dir(&out).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("checkpoint-")));
        return;
    };
    assert!(
        msg.contains("resume from it with a lower learning rate"),
        "{msg}"
    );
    let saved = load_checkpoint(&named, &candle_core::Device::Cpu).unwrap();
    for name in saved.weights.names() {
        let t = saved.weights.get(&name).unwrap();
        let sum = t.to_dtype(candle_core::DType::F32).unwrap().abs().unwrap();
        let sum = sum.sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(
            sum.is_finite(),
            "{name} of {} is not finite",
            named.display()
        );
    }
    // Every checkpoint in the folder is finite: the one named is the last.
    let steps: usize = named
        .to_string_lossy()
        .rsplit('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(!out.join(format!("checkpoint-{}", steps + 1)).exists());
    let end = (steps + 2).to_string();
    let resume = path_str(&named);
    let resumed = run_jokes(
        &out,
        &["--resume", &resume, "--lr", "1e-5", "--max-steps", &end],
    );
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let history = std::fs::read_to_string(out.join("history.json")).unwrap();
    assert!(
        history.contains("schedule_changes") && history.contains("\"lr\": 0.00001"),
        "{history}"
    );
}

/// `--resume` changes the schedule and nothing else: flags that would change the model, the
/// data or the batches are refused in one line (06 and 07 alike).
#[test]
fn resume_refuses_what_it_cannot_change() {
    let dir = scratch("resume-flags");
    let out = dir.join("out");
    assert!(run_jokes(&out, &short()).status.success());
    let ckpt = path_str(&out.join("checkpoint-6"));
    let refused = run_jokes(&out, &["--resume", &ckpt, "--max-seq-len", "30"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("--max-seq-len"),
        "{}",
        stderr(&refused)
    );
    let imdb = Command::new(example_binary("07_imdb_finetune"))
        .args([
            "--quiet", "--device", "cpu", "--resume", "latest", "--dtype", "bf16",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(!imdb.status.success());
    assert!(stderr(&imdb).contains("--dtype"), "{}", stderr(&imdb));
}

/// Output folders that cannot be used fail before any model is loaded, naming the path.
#[test]
fn an_unusable_output_folder_is_named() {
    // Folders no one can write, even root: the error names the path.
    for out in ["/proc/gpt2-runs/out", "/proc/self"] {
        let o = run_jokes(Path::new(out), &short());
        assert!(!o.status.success());
        assert!(stderr(&o).contains(out), "{}", stderr(&o));
    }
    let dir = scratch("bad-out");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a-file");
    std::fs::write(&file, "x").unwrap();
    let o = run_jokes(&file, &short());
    assert!(!o.status.success());
    let msg = stderr(&o);
    assert!(
        msg.contains(&path_str(&file)) && msg.contains("is a file"),
        "{msg}"
    );
    let inside = file.join("out");
    let o = run_jokes(&inside, &short());
    assert!(!o.status.success());
    assert!(stderr(&o).contains(&path_str(&inside)), "{}", stderr(&o));
}
