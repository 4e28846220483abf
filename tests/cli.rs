//! The `recur` binary as a user meets it: `recur admin` lists its commands and refuses bad
//! arguments before sending anything (exit 2, naming the flag), settings typos in the
//! environment and log levels that are no levels stop `recur serve`, and logs written to a pipe
//! carry no colour codes. No test here needs a running daemon; the last starts one on an
//! embedded redis-server in a temporary directory.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const RECUR: &str = env!("CARGO_BIN_EXE_recur");

/// `recur <args>` with none of the caller's `RECUR_` variables, `RUST_LOG` or `NO_COLOR`, in
/// `dir`, with its embedded Redis (if it ever starts one) under `dir`.
fn recur(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(RECUR);
    for (name, _) in std::env::vars_os() {
        let upper = name.to_string_lossy().to_ascii_uppercase();
        if upper.starts_with("RECUR_") || upper == "RUST_LOG" || upper == "NO_COLOR" {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .current_dir(dir)
        .env("RECUR_REDIS__EMBEDDED__DATA_DIR", dir.join("redis"))
        .env("RECUR_HTTP__LISTEN", "")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits for `child` at most `limit` (then kills it: a refusal that did not happen must not
/// leave a daemon running), and returns its output.
fn finish(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            child.kill().ok();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Runs `recur <args>` to the end (at most 20 s): exit code, stdout, stderr.
fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let child = recur(dir.path(), args, env).spawn().expect("spawn recur");
    let out = finish(child, Duration::from_secs(20));
    assert!(
        !dir.path().join("redis").exists(),
        "`recur {}` started an embedded Redis",
        args.join(" ")
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn admin_help_lists_every_command() {
    let (code, stdout, _) = run(&["admin", "--help"], &[]);
    assert_eq!(code, Some(0));
    for name in recur::admin::COMMAND_NAMES.iter().chain(&["watch", "send"]) {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{name} "))),
            "`{name}` is not listed:\n{stdout}"
        );
    }
    assert!(stdout.contains("Exit status"), "{stdout}");
    // Each command has its own help with its flags.
    let (code, stdout, _) = run(&["admin", "recordPayment", "--help"], &[]);
    assert_eq!(code, Some(0));
    for flag in ["--order-id <ID>", "--payment-id <ID>", "--amount <DECIMAL>"] {
        assert!(stdout.contains(flag), "{flag}:\n{stdout}");
    }
    // Without a command: the help, as a usage error.
    let (code, _, stderr) = run(&["admin"], &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("getOrder"), "{stderr}");
}

#[test]
fn a_mistyped_admin_command_suggests_the_real_one() {
    let (code, stdout, stderr) = run(&["admin", "getOrdr", "--order-id", "ord-1"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("unrecognized subcommand 'getOrdr'"),
        "{stderr}"
    );
    assert!(stderr.contains("'getOrder'"), "a suggestion: {stderr}");
}

#[test]
fn bad_admin_arguments_are_named_before_anything_is_sent() {
    // An unreachable Redis: had anything been sent, the error would be about it.
    let nowhere = [("RECUR_REDIS__URL", "redis://127.0.0.1:1")];
    let (code, _, stderr) = run(
        &[
            "admin",
            "recordPayment",
            "--order-id",
            "ord-1",
            "--payment-id",
            "pay-1",
            "--amount",
            "10,00",
        ],
        &nowhere,
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value '10,00' for '--amount <DECIMAL>'"),
        "{stderr}"
    );
    assert!(stderr.contains("10.00"), "an example: {stderr}");

    let (code, _, stderr) = run(&["admin", "advanceClock", "--to", "2026-02"], &nowhere);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("'--to <DATE>'"), "{stderr}");
    assert!(stderr.contains("2026-05-01 (midnight UTC)"), "{stderr}");

    // Missing arguments, all named by their flags, also when --json gives the others.
    let (code, _, stderr) = run(&["admin", "recordPayment", "--order-id", "ord-1"], &nowhere);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--payment-id <ID>") && stderr.contains("--amount <DECIMAL>"),
        "{stderr}"
    );
    let (code, _, stderr) = run(
        &[
            "admin",
            "recordPayment",
            "--json",
            r#"{"orderId": "ord-1"}"#,
        ],
        &nowhere,
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--payment-id <ID>") && stderr.contains("--amount <DECIMAL>"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Usage: recur admin recordPayment"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("127.0.0.1:1"),
        "nothing was sent: {stderr}"
    );
}

#[test]
fn an_environment_typo_is_refused_naming_the_nearest_variable() {
    let typo = [("RECUR_REDIS_URL", "redis://127.0.0.1:1")];
    let (code, _, stderr) = run(&["serve", "--clock", "simulated"], &typo);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("unknown environment variable RECUR_REDIS_URL"),
        "{stderr}"
    );
    assert!(
        stderr.contains("did you mean RECUR_REDIS__URL?"),
        "{stderr}"
    );
    // The CLI reads the same settings.
    let (code, _, stderr) = run(&["admin", "ping"], &typo);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("did you mean RECUR_REDIS__URL?"),
        "{stderr}"
    );
    // What recur reads besides settings stays allowed.
    let (code, _, stderr) = run(
        &["admin", "ping", "--timeout", "1s"],
        &[
            ("RECUR_BENCH_AUTO_AOF_REWRITE", "off"),
            ("RECUR_PROMTOOL", "promtool"),
            ("RECUR_REDIS__URL", "redis://127.0.0.1:1"),
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cannot connect to Redis"), "{stderr}");
}

/// Every `RECUR_` variable the docs, the deploy files, the CI script, the benchmarks and the
/// daemon tests name is accepted (a setting, or one recur reads besides), but the docs' typo.
#[test]
fn every_recur_variable_the_repository_names_is_accepted() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names = std::collections::BTreeSet::new();
    let mut files = vec![root.join("README.md"), root.join(".ci/run")];
    for dir in ["deploy", "docs", "bench/src", "tests/daemon", "config"] {
        collect(&root.join(dir), &mut files);
    }
    files.extend(["tests/deploy.rs", "tests/bench_smoke.rs"].map(|f| root.join(f)));
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (at, _) in text.match_indices("RECUR_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            // "RECUR_ environment variables" in prose names none.
            if name.len() > "RECUR_".len() {
                names.insert(name);
            }
        }
    }
    assert!(names.len() > 20, "{names:?}");
    // The docs' example of a typo, refused.
    let typos = ["RECUR_REDIS_URL"];
    for name in names {
        let checked = recur::config::check_env([name.clone()]);
        if typos.contains(&name.as_str()) {
            assert!(checked.is_err(), "{name} is accepted");
        } else {
            checked.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

fn collect(path: &Path, files: &mut Vec<std::path::PathBuf>) {
    match std::fs::read_dir(path) {
        Ok(entries) => {
            for entry in entries.flatten() {
                collect(&entry.path(), files);
            }
        }
        Err(_) => files.push(path.to_path_buf()),
    }
}

#[test]
fn a_log_level_that_is_no_level_is_refused() {
    for (level, hint) in [("verbose", ""), ("warning", "did you mean `warn`?")] {
        let (code, _, stderr) = run(
            &["serve", "--clock", "simulated"],
            &[("RECUR_LOG__LEVEL", level)],
        );
        assert_eq!(code, Some(1), "{level}: {stderr}");
        assert!(stderr.contains("invalid setting `log.level`"), "{stderr}");
        assert!(
            stderr.contains(&format!("`{level}` is neither a level")),
            "{stderr}"
        );
        assert!(stderr.contains(hint), "{stderr}");
        assert!(stderr.contains("RECUR_LOG__LEVEL") || stderr.contains("log.level"));
    }
    let (code, _, stderr) = run(
        &["serve", "--clock", "simulated"],
        &[("RUST_LOG", "verbose")],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("RUST_LOG: `verbose`"), "{stderr}");
}

#[test]
fn bench_help_is_passed_through() {
    // `recur bench` hands everything to recur-bench, as `recur bench`; without it built, it
    // says how to build it.
    let (code, _, stderr) = run(&["bench", "--help"], &[]);
    let bench = Path::new(RECUR).with_file_name("recur-bench");
    if bench.exists() {
        let (code, stdout, stderr) = run(&["bench", "--help"], &[]);
        assert_eq!(code, Some(0), "{stderr}");
        assert!(
            stdout.contains("Usage: recur bench [OPTIONS] <SCENARIO>"),
            "{stdout}"
        );
    } else {
        assert_eq!(code, Some(1));
        assert!(
            stderr.contains("cargo build --release --workspace"),
            "{stderr}"
        );
    }
}

/// Logs go to stderr; written to a pipe (a file, journald) they carry no colour codes.
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = recur(dir.path(), &["serve", "--clock", "simulated"], &[])
        .spawn()
        .expect("spawn recur serve");
    let mut stderr = child.stderr.take().expect("stderr");
    // Read until the daemon says it is ready, then stop it.
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    });
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let ready = dir.path().join("redis").join("redis.sock").exists();
        if (ready && started.elapsed() > Duration::from_secs(2))
            || started.elapsed() > Duration::from_secs(20)
        {
            break;
        }
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let out = finish(child, Duration::from_secs(30));
    let logs = String::from_utf8_lossy(&reader.join().expect("reader")).into_owned();
    assert!(out.status.success(), "{:?}\n{logs}", out.status);
    assert!(logs.contains("recur ready"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "colour codes in a pipe:\n{logs}");
}
