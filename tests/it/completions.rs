//! `discocache completions SHELL` and `discocache man`, generated from the
//! argument definitions.

use std::process::Command;

fn discocache(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_discocache"))
        .args(args)
        .output()
        .expect("run discocache");
    assert!(out.status.success(), "discocache {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
fn bash_loads_the_completion_and_completes_subcommands() {
    let script = discocache(&["completions", "bash"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("discocache.bash");
    std::fs::write(&file, script).expect("write the script");
    // Load it in a real bash, then ask bash what it registered and what it
    // offers after `discocache ` and after `discocache completions `.
    let probe = r#"
        set -e
        source "$1"
        complete -p discocache
        COMP_WORDS=(discocache ""); COMP_CWORD=1; COMP_LINE="discocache "; COMP_POINT=${#COMP_LINE}
        _discocache discocache "" discocache
        echo "top: ${COMPREPLY[*]}"
        COMP_WORDS=(discocache completions ""); COMP_CWORD=2; COMP_LINE="discocache completions "; COMP_POINT=${#COMP_LINE}
        _discocache discocache "" completions
        echo "shells: ${COMPREPLY[*]}"
    "#;
    let out = Command::new("bash")
        .args(["--noprofile", "--norc", "-c", probe, "probe"])
        .arg(&file)
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bash: {out:?}");
    let registered = stdout.lines().next().unwrap_or_default();
    assert!(
        registered.starts_with("complete ")
            && registered.contains("-F _discocache")
            && registered.ends_with(" discocache"),
        "{stdout}"
    );
    let top = stdout.lines().find(|l| l.starts_with("top:")).expect("top");
    for word in ["get", "refresh", "status", "serve", "completions", "man"] {
        assert!(top.split_whitespace().any(|w| w == word), "{word}: {top}");
    }
    let shells = stdout
        .lines()
        .find(|l| l.starts_with("shells:"))
        .expect("shells");
    for word in ["bash", "zsh", "fish"] {
        assert!(
            shells.split_whitespace().any(|w| w == word),
            "{word}: {shells}"
        );
    }
}

#[test]
fn zsh_and_fish_completions_name_the_subcommands() {
    let zsh = discocache(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef discocache"), "{zsh}");
    let fish = discocache(&["completions", "fish"]);
    assert!(fish.contains("complete -c discocache"), "{fish}");
    for script in [&zsh, &fish] {
        for word in ["refresh", "status", "invalidate", "prune"] {
            assert!(script.contains(word), "{word} missing");
        }
    }
}

#[test]
fn man_page_is_roff_naming_the_commands() {
    let page = discocache(&["man"]);
    assert!(page.contains(".TH discocache 1"), "{page}");
    assert!(page.contains(".SH NAME") && page.contains(".SH SYNOPSIS"));
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    for command in ["serve", "get", "refresh", "status", "prune", "completions"] {
        assert!(
            page.contains(&format!("discocache\\-{command}(1)")),
            "{command} missing from the man page"
        );
    }
}
