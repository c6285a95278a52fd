//! The peer's command line. Being an integration test, this also makes
//! `cargo test` build the `netlens-peer` executable itself, which netlens's
//! own integration tests run.

use std::process::Command;

fn peer(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_netlens-peer"))
        .args(args)
        .output()
        .expect("netlens-peer runs")
}

#[test]
fn help_lists_every_mode() {
    let out = peer(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for mode in ["serve", "connect", "bulk", "churn", "rr", "hold", "uring"] {
        assert!(help.contains(mode), "no {mode} in:\n{help}");
    }
}

#[test]
fn bad_arguments_are_usage_errors() {
    for args in [
        &["rr", "--to", "192.0.2.1:80", "--secs", "1", "--size", "0"][..],
        &["connect", "--to", "not-an-address"],
        &["nope"],
    ] {
        let out = peer(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}
