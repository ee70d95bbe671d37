//! Shell completion scripts and man pages, as a user meets them: the bash script loaded
//! into a real bash and asked what it completes (subcommands, image names from the
//! store), zsh and fish scripts, man pages rendered by `man -l`.

use std::path::Path;
use std::process::Command;

use crate::common::{self, err, images, out, TempStore};

const RACKER: &str = env!("CARGO_BIN_EXE_racker");
const POSTROJ: &str = env!("CARGO_BIN_EXE_postroj");

/// `binary completion SHELL`'s script, insisting on success.
fn script(binary: &str, shell: &str) -> String {
    let o = Command::new(binary).args(["completion", shell]).output().expect("running the binary");
    assert!(o.status.success(), "{binary} completion {shell}: {:?}\n{}", o.status, err(&o));
    out(&o)
}

/// What the bash completion `script` (saved in `dir`) offers for `words`, the last one
/// being completed: the script is sourced into a real bash, and the function it
/// registered for the binary is called as bash would call it.
fn complete(dir: &Path, script: &str, words: &[&str]) -> Vec<String> {
    let file = dir.join("completion.bash");
    std::fs::write(&file, script).expect("writing the script");
    let command = words[0];
    let name = Path::new(command).file_name().and_then(|n| n.to_str()).expect("a binary name");
    let program = format!(
        r#"source "$1" || exit 1
spec=$(complete -p {name}) || exit 1
fn=$(sed -n 's/.* -F \([^ ]*\) .*/\1/p' <<<"$spec")
[[ -n $fn ]] || {{ echo "no function in: $spec" >&2; exit 1; }}
shift
COMP_WORDS=("$@")
COMP_CWORD=$(($# - 1))
"$fn" "$1" "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#
    );
    let o = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program, "completion"])
        .arg(&file)
        .args(words)
        .output()
        .expect("running bash");
    assert!(o.status.success(), "bash completing {words:?}: {:?}\n{}", o.status, err(&o));
    out(&o).lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

#[test]
fn bash_completes_subcommands_and_never_internal_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bash = script(RACKER, "bash");
    let offered = complete(dir.path(), &bash, &[RACKER, "ru"]);
    assert_eq!(offered, ["run"], "racker ru<TAB>");
    let all = complete(dir.path(), &bash, &[RACKER, ""]);
    for want in ["run", "images", "rmi", "container", "image", "completion", "man"] {
        assert!(all.iter().any(|w| w == want), "racker <TAB> does not offer {want}: {all:?}");
    }
    for words in [&[RACKER, ""][..], &[RACKER, "co"], &[RACKER, "help", ""], &[RACKER, "help", "co"]] {
        let offered = complete(dir.path(), &bash, words);
        assert!(
            !offered.iter().any(|w| w.contains("monitor")),
            "{words:?} offers the internal subcommand: {offered:?}"
        );
    }
    assert!(
        !bash.contains("container-monitor") && !bash.contains("container__monitor"),
        "the script names container-monitor"
    );
    let group = complete(dir.path(), &bash, &[RACKER, "container", ""]);
    assert!(group.iter().any(|w| w == "run") && group.iter().any(|w| w == "ls"), "racker container <TAB>: {group:?}");
    let shells = complete(dir.path(), &bash, &[RACKER, "completion", ""]);
    assert!(shells.iter().any(|w| w == "zsh"), "racker completion <TAB>: {shells:?}");

    let postroj = script(POSTROJ, "bash");
    assert_eq!(complete(dir.path(), &postroj, &[POSTROJ, "pu"]), ["pull", "push"], "postroj pu<TAB>");
    assert_eq!(complete(dir.path(), &postroj, &[POSTROJ, "su"]), ["submit"], "postroj su<TAB>");
    let all = complete(dir.path(), &postroj, &[POSTROJ, ""]);
    for want in ["pkgprobe", "list-images", "cache", "report", "submit", "completion", "man"] {
        assert!(all.iter().any(|w| w == want), "postroj <TAB> does not offer {want}: {all:?}");
    }
}

/// Removes a container when the test ends, passed or failed.
struct RemoveOnDrop<'a>(&'a TempStore, &'static str);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["rm", "-f", self.1]);
    }
}

#[test]
fn bash_completes_image_names_from_the_store() {
    common::require_root();
    let store = TempStore::new();
    let _layout = images::add_busybox(&store);
    let dir = tempfile::tempdir().expect("tempdir");
    let bash = script(RACKER, "bash");
    let root = store.root().to_str().expect("utf-8");
    // Every name `racker images` shows, as REPOSITORY:TAG.
    let mut names: Vec<String> = store
        .ok(&["images"])
        .lines()
        .skip(1)
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            format!("{}:{}", cols[0], cols[1])
        })
        .collect();
    names.sort();
    assert!(names.contains(&"bb:latest".to_owned()), "racker images: {names:?}");
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };

    for words in [
        &[RACKER, "--root", root, "run", ""][..],
        &[RACKER, "--root", root, "run", "-p", "8080:80", "--name", "web", "-it", ""],
        &[RACKER, "--root", root, "container", "run", "--rm", ""],
        &[RACKER, "--root", root, "rmi", ""],
        &[RACKER, "--root", root, "rmi", "bb:latest", ""],
        &[RACKER, "--root", root, "image", "rm", ""],
        &[RACKER, "--root", root, "history", ""],
        &[RACKER, "--root", root, "save", "-o", "out.tar", ""],
        &[RACKER, "--root", root, "image", "history", ""],
        &[RACKER, "--root", root, "image", "save", ""],
        &[RACKER, "--root", root, "image", "inspect", ""],
        &[RACKER, "--root", root, "image", "tag", ""],
        &[RACKER, "--root", root, "image", "tag", "bb:latest", ""],
    ] {
        assert_eq!(sorted(complete(dir.path(), &bash, words)), names, "image names for {:?}", &words[3..]);
    }
    assert_eq!(complete(dir.path(), &bash, &[RACKER, "--root", root, "run", "b"]), ["bb:latest"]);
    assert_eq!(complete(dir.path(), &bash, &[RACKER, "--root", root, "history", "b"]), ["bb:latest"]);
    // An image is expected: no subcommand names (`load`, `ls`) for what is typed.
    let offered = complete(dir.path(), &bash, &[RACKER, "--root", root, "image", "tag", "lo"]);
    let expected: Vec<&String> = names.iter().filter(|n| n.starts_with("lo")).collect();
    assert_eq!(offered.iter().collect::<Vec<_>>(), expected, "racker image tag lo<TAB>");
    // Container names where a container is expected, from `racker ps -a`.
    store.ok(&["create", "--name", "compl-web", "bb", "true"]);
    let _remove = RemoveOnDrop(&store, "compl-web");
    for words in [
        &[RACKER, "--root", root, "start", ""][..],
        &[RACKER, "--root", root, "rm", "-f", ""],
        &[RACKER, "--root", root, "logs", "compl"],
        &[RACKER, "--root", root, "container", "stop", ""],
    ] {
        assert_eq!(complete(dir.path(), &bash, words), ["compl-web"], "container names for {:?}", &words[3..]);
    }
    assert_eq!(store.ok(&["rm", "compl-web"]), "compl-web\n");
    // bash splits the word at ':' and replaces only what follows the last one.
    assert_eq!(complete(dir.path(), &bash, &[RACKER, "--root", root, "rmi", "bb", ":", "la"]), ["latest"]);
    // Not where something else is expected: the command after the image, an option's value.
    for words in [
        &[RACKER, "--root", root, "run", "bb", ""][..],
        &[RACKER, "--root", root, "run", "--name", ""],
        &[RACKER, "--root", root, "ps", ""],
    ] {
        let offered = complete(dir.path(), &bash, words);
        assert!(!offered.iter().any(|w| w == "bb:latest"), "image names for {:?}: {offered:?}", &words[3..]);
    }
    store.assert_clean();
}

#[test]
fn zsh_and_fish_scripts_name_the_subcommands() {
    for (binary, name, sub) in [(RACKER, "racker", "run"), (POSTROJ, "postroj", "pkgprobe")] {
        let zsh = script(binary, "zsh");
        assert!(zsh.starts_with(&format!("#compdef {name}")), "{name} completion zsh:\n{zsh}");
        let fish = script(binary, "fish");
        assert!(fish.contains(&format!("complete -c {name}")), "{name} completion fish:\n{fish}");
        for text in [&zsh, &fish] {
            assert!(text.contains(sub) && text.contains("completion"), "{name}'s script lacks {sub}:\n{text}");
            assert!(!text.contains("monitor"), "{name}'s script names the internal subcommand");
        }
    }
    let o = Command::new(RACKER).args(["completion", "tcsh"]).output().expect("racker");
    assert_eq!(o.status.code(), Some(125), "racker completion tcsh: {:?}", o.status);
    assert!(err(&o).contains("invalid value 'tcsh'"), "{}", err(&o));
}

/// `man -l page` as text (ASCII: options keep their plain '-'), each line's justified
/// spacing made single.
fn man(page: &Path) -> String {
    let o = Command::new("man")
        .args(["-P", "cat", "-l"])
        .arg(page)
        .env("LC_ALL", "C")
        .env("MANWIDTH", "200")
        .output()
        .expect("running man (man-db, scripts/prerequisites)");
    assert!(o.status.success(), "man -l {}: {:?}\n{}", page.display(), o.status, err(&o));
    out(&o).lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect::<Vec<_>>().join("\n")
}

#[test]
fn man_pages_render_with_every_subcommand_and_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pages = dir.path().join("man1");
    let o = Command::new(RACKER).args(["man", "--out-dir"]).arg(&pages).output().expect("racker");
    assert!(o.status.success(), "racker man: {:?}\n{}", o.status, err(&o));
    let o = Command::new(POSTROJ).args(["man", "--out-dir"]).arg(&pages).output().expect("postroj");
    assert!(o.status.success(), "postroj man: {:?}\n{}", o.status, err(&o));
    let files: Vec<String> = std::fs::read_dir(&pages)
        .expect("the pages")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    for want in
        ["racker.1", "racker-run.1", "racker-image-rm.1", "racker-container-run.1", "postroj.1", "postroj-pull.1"]
    {
        assert!(files.iter().any(|f| f == want), "no {want} in {files:?}");
    }
    assert!(!files.iter().any(|f| f.contains("monitor") || f.contains("-help")), "internal pages: {files:?}");

    let racker = man(&pages.join("racker.1"));
    assert!(racker.contains("racker-run(1)") && racker.contains("--root"), "racker.1:\n{racker}");
    assert!(!racker.contains("monitor"), "racker.1 names the internal subcommand:\n{racker}");
    let run = man(&pages.join("racker-run.1"));
    for want in ["racker run", "--restart", "--publish", "-p,", "Run a command in a new container"] {
        assert!(run.contains(want), "racker-run.1 lacks {want}:\n{run}");
    }
    let pull = man(&pages.join("postroj-pull.1"));
    assert!(pull.contains("--all") && pull.contains("postroj pull"), "postroj-pull.1:\n{pull}");
}
