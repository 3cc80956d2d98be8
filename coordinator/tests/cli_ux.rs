//! The command line as a daily user meets it: closed pipes, completions and man pages, the
//! documented exit codes, environment fallbacks, and `isolab rerun` reproducing a run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{BIN, can_run};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn isolab(args: &[&str], cwd: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("ISOLAB_SERVER")
        .env_remove("ISOLAB_TLS_DIR")
        .output()
        .expect("run isolab")
}

/// Runs isolab with stdout on a pipe whose reading end is already closed: every write fails with
/// EPIPE, deterministically (no race with a reader that stops early, as `| head` is).
fn with_closed_stdout(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = Command::new(BIN)
        .args(args)
        .current_dir(workspace())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn every_printing_command_ends_quietly_on_a_closed_pipe() {
    let quickstart = "pipelines/quickstart.yaml";
    for args in [
        vec!["plan", quickstart],
        vec!["plan", quickstart, "--json"],
        vec!["validate", quickstart],
        vec!["schema"],
        vec!["completions", "bash"],
        vec!["man"],
        vec!["--help"],
    ] {
        let out = with_closed_stdout(&args);
        let err = text(&out.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

#[test]
fn completions_and_man_pages() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef isolab"),
        ("fish", "complete -c isolab"),
    ] {
        let out = isolab(&["completions", shell], dir.path());
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        for sub in ["rerun", "compare", "completions"] {
            assert!(script.contains(sub), "{shell} completes `{sub}`");
        }
    }
    let out = isolab(&["man"], dir.path());
    let page = text(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH isolab"),
        "{page}"
    );
    assert!(
        page.contains("Exit codes"),
        "the man page documents exit codes"
    );
    let pages = dir.path().join("man");
    let out = isolab(&["man", "--dir", pages.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for page in [
        "isolab.1",
        "isolab-run.1",
        "isolab-rerun.1",
        "isolab-runs-list.1",
    ] {
        assert!(pages.join(page).is_file(), "{page} missing");
    }
}

#[test]
fn help_documents_exit_codes_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let help = text(&isolab(&["--help"], dir.path()).stdout);
    for needle in [
        "3  the run finished but some trials failed",
        "1  could not run",
        "ISOLAB_SERVER",
        "ISOLAB_TLS_DIR",
    ] {
        assert!(help.contains(needle), "`{needle}` not in --help:\n{help}");
    }
    let report = text(&isolab(&["report", "--help"], dir.path()).stdout);
    assert!(report.contains("report.html"), "{report}");
    let version = text(&isolab(&["--version"], dir.path()).stdout);
    assert!(
        version.contains(" ("),
        "version names the commit: {version}"
    );
}

#[test]
fn client_commands_take_the_server_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    // A loopback port nothing listens on: the error names the address taken from the variable.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    for args in [vec!["runs", "list"], vec!["cancel", "r1"]] {
        let out = Command::new(BIN)
            .args(&args)
            .current_dir(dir.path())
            .env("ISOLAB_SERVER", &addr)
            .env_remove("ISOLAB_TLS_DIR")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(&addr), "{args:?}: {err}");
    }
}

#[test]
fn rerun_reproduces_the_manifest_and_failed_trials_exit_3() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let pipeline = workspace().join("pipelines/quickstart.yaml");
    let out = isolab(
        &[
            "run",
            pipeline.to_str().unwrap(),
            "--results",
            results.to_str().unwrap(),
            "--only",
            "platform=native,workload=syscall",
            "--set",
            "defaults.duration=100ms",
            "--set",
            "defaults.repetitions=2",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let first = PathBuf::from(text(&out.stdout).trim());
    let out = isolab(&["rerun", first.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let second = PathBuf::from(text(&out.stdout).trim());
    assert_ne!(first, second, "a new run directory");
    assert_eq!(second.parent(), first.parent(), "beside the original");
    let manifest = |d: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("manifest.json")).unwrap()).unwrap()
    };
    let (a, b) = (manifest(&first), manifest(&second));
    for key in [
        "pipeline_sha256",
        "pipeline_text",
        "overrides",
        "profile",
        "only",
        "seed",
        "pipeline_file",
    ] {
        assert_eq!(a[key], b[key], "{key}");
    }
    let ids = |m: &serde_json::Value| -> Vec<String> {
        m["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&a), ids(&b), "the same trials in the same order");
    assert!(
        !a["build"]["git_commit"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );
    assert!(
        a["build"]["sha256"]["isolab-workload"]
            .as_str()
            .is_some_and(|s| s.len() == 64),
        "{}",
        a["build"]
    );

    // A workload that fails: the run completes, records it, and exits 3 (not 1).
    let wrapper = dir.path().join("failing-workload");
    std::fs::write(&wrapper, "#!/bin/sh\necho 'not json'\nexit 1\n").unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args([
            "run",
            pipeline.to_str().unwrap(),
            "--results",
            results.to_str().unwrap(),
            "--only",
            "platform=native,workload=syscall",
            "--set",
            "defaults.duration=100ms",
            "--set",
            "defaults.repetitions=1",
            "--set",
            "defaults.warmup=0",
        ])
        .env("ISOLAB_WORKLOAD_BIN", &wrapper)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let failed = PathBuf::from(text(&out.stdout).trim());
    assert!(failed.join("manifest.json").is_file());
}

/// The code in README: inline `code` spans and the lines of fenced blocks.
fn readme_code() -> Vec<String> {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let mut code = Vec::new();
    let mut fenced = false;
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            code.push(line.to_owned());
        } else {
            code.extend(line.split('`').skip(1).step_by(2).map(str::to_owned));
        }
    }
    code
}

/// Every `isolab …` and `just …` command shown in README: the subcommand words up to the first
/// argument (a flag, a placeholder, a path).
fn readme_commands(tool: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for span in readme_code() {
        let span = span.replace("\\|", "|");
        for piece in span.split(['|', ';', '(', ')']).flat_map(|p| p.split("&&")) {
            let mut words = piece.split_whitespace();
            if words.next() != Some(tool) {
                continue;
            }
            let sub: Vec<String> = words
                .take_while(|w| {
                    w.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                        && w.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                })
                .map(str::to_owned)
                .collect();
            if !out.contains(&sub) {
                out.push(sub);
            }
        }
    }
    out
}

#[test]
fn every_command_shown_in_the_readme_runs() {
    let dir = tempfile::tempdir().unwrap();
    let commands = readme_commands("isolab");
    assert!(
        commands.len() >= 12,
        "README shows the command line: {commands:?}"
    );
    for sub in &commands {
        let mut args: Vec<&str> = sub.iter().map(String::as_str).collect();
        args.push("--help");
        let out = isolab(&args, dir.path());
        assert_eq!(
            out.status.code(),
            Some(0),
            "README shows `isolab {}` but `isolab {}` fails: {}",
            sub.join(" "),
            args.join(" "),
            text(&out.stderr)
        );
    }
    let justfile = std::fs::read_to_string(workspace().join("Justfile")).unwrap();
    let recipes: Vec<&str> = justfile
        .lines()
        .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_lowercase()) && l.contains(':'))
        .filter_map(|l| l.split([' ', ':']).next())
        .collect();
    let just = readme_commands("just");
    assert!(
        just.iter()
            .any(|s| s.first().map(String::as_str) == Some("demo")),
        "{just:?}"
    );
    for sub in just {
        let recipe = sub.first().map_or("default", String::as_str);
        assert!(
            recipes.contains(&recipe),
            "README shows `just {recipe}`, which the Justfile does not have ({recipes:?})"
        );
    }
}
