//! `racker completion SHELL`: clap_complete's script, and for bash image and container
//! names where a command takes one (`racker run <TAB>`, `racker rmi <TAB>`, `racker stop
//! <TAB>`), as docker's completion offers them. clap's script is static; a wrapper around its function asks
//! `racker images` at the moment of completion.

use std::fmt::Write as _;

use crate::shell::{self, Shell};

/// Where a name is expected: the first argument only, or every argument.
#[derive(Clone, Copy)]
enum Takes {
    First,
    All,
}

/// What is named there: an image (from `racker images`) or a container (`racker ps -a`).
#[derive(Clone, Copy)]
enum Kind {
    Image,
    Container,
}

/// The subcommands that take image or container names (those that exist in this racker
/// are completed; the others are skipped).
const NAME_ARGS: &[(&str, Takes, Kind)] = &[
    ("run", Takes::First, Kind::Image),
    ("create", Takes::First, Kind::Image),
    ("container run", Takes::First, Kind::Image),
    ("container create", Takes::First, Kind::Image),
    ("tag", Takes::All, Kind::Image),
    ("push", Takes::First, Kind::Image),
    ("history", Takes::First, Kind::Image),
    ("save", Takes::All, Kind::Image),
    ("rmi", Takes::All, Kind::Image),
    ("image rm", Takes::All, Kind::Image),
    ("image inspect", Takes::All, Kind::Image),
    ("image history", Takes::First, Kind::Image),
    ("image save", Takes::All, Kind::Image),
    ("image tag", Takes::All, Kind::Image),
    ("image push", Takes::First, Kind::Image),
    ("start", Takes::All, Kind::Container),
    ("stop", Takes::All, Kind::Container),
    ("restart", Takes::All, Kind::Container),
    ("kill", Takes::All, Kind::Container),
    ("rm", Takes::All, Kind::Container),
    ("pause", Takes::All, Kind::Container),
    ("unpause", Takes::All, Kind::Container),
    ("wait", Takes::All, Kind::Container),
    ("inspect", Takes::All, Kind::Container),
    ("stats", Takes::All, Kind::Container),
    ("logs", Takes::First, Kind::Container),
    ("exec", Takes::First, Kind::Container),
    ("attach", Takes::First, Kind::Container),
    ("top", Takes::First, Kind::Container),
    ("diff", Takes::First, Kind::Container),
    ("export", Takes::First, Kind::Container),
    ("port", Takes::First, Kind::Container),
    ("rename", Takes::First, Kind::Container),
    ("commit", Takes::First, Kind::Container),
    ("container start", Takes::All, Kind::Container),
    ("container stop", Takes::All, Kind::Container),
    ("container restart", Takes::All, Kind::Container),
    ("container kill", Takes::All, Kind::Container),
    ("container rm", Takes::All, Kind::Container),
    ("container inspect", Takes::All, Kind::Container),
    ("container logs", Takes::First, Kind::Container),
    ("container exec", Takes::First, Kind::Container),
];

/// The script for `shell`; bash's completes image names too.
pub fn script(cmd: &clap::Command, shell: Shell) -> String {
    let mut script = shell::completion_script(cmd, shell);
    if let Shell::Bash = shell {
        script.push_str(&bash_image_names(cmd));
    }
    script
}

/// The subcommand at `path` ("image rm"), built (global options propagated), if it exists.
fn find<'a>(cmd: &'a clap::Command, path: &str) -> Option<&'a clap::Command> {
    path.split(' ').try_fold(cmd, |c, name| c.find_subcommand(name))
}

/// The options of `cmd` that take a value (`-p 80:80`): the word after them is not an argument.
fn valued_options(cmd: &clap::Command) -> String {
    let mut words = Vec::new();
    for arg in cmd.get_arguments().filter(|a| !a.is_positional() && a.get_num_args().is_some_and(|n| n.takes_values()))
    {
        words.extend(arg.get_short_and_visible_aliases().into_iter().flatten().map(|s| format!("-{s}")));
        words.extend(arg.get_long_and_visible_aliases().into_iter().flatten().map(|l| format!("--{l}")));
    }
    words.join(" ")
}

/// A bash function that replaces clap's completion where an image name is expected: it
/// walks the words typed so far (skipping options and their values) to find the
/// subcommand and how many arguments it has, then offers `racker images`' names.
fn bash_image_names(cmd: &clap::Command) -> String {
    let mut cmd = shell::without_hidden(cmd);
    cmd.build();
    let name = cmd.get_name().to_owned();
    let mut valued = format!("        \"\") echo '{}' ;;\n", valued_options(&cmd));
    let mut groups = Vec::new();
    let mut takes = String::new();
    for (path, how, kind) in NAME_ARGS {
        let Some(sub) = find(&cmd, path) else { continue };
        let _ = writeln!(valued, "        \"{path}\") echo '{}' ;;", valued_options(sub));
        let how = match how {
            Takes::First => "first",
            Takes::All => "all",
        };
        let kind = match kind {
            Kind::Image => "image",
            Kind::Container => "container",
        };
        let _ = writeln!(takes, "        \"{path}\") echo {how} {kind} ;;");
        if let Some((group, _)) = path.split_once(' ') {
            if !groups.contains(&group) {
                let _ = writeln!(
                    valued,
                    "        \"{group}\") echo '{}' ;;",
                    find(&cmd, group).map(valued_options).unwrap_or_default()
                );
                groups.push(group);
            }
        }
    }
    let groups = groups.join(" ");
    format!(
        r#"
# {name}: image and container names where a command takes one, from `{name} images` and
# `{name} ps -a` (added to clap's script).
__{name}_valued_options() {{
    case "$1" in
{valued}    esac
}}

__{name}_image_args() {{
    case "$1" in
{takes}    esac
}}

__{name}_complete_images() {{
    _{name} "$@"
    # The words typed so far, with what bash splits at ':' (debian:bookworm, -p 80:80) joined again.
    local i words=() cword=0
    for ((i = 0; i < ${{#COMP_WORDS[@]}}; i++)); do
        if ((i > 1)) && [[ ${{COMP_WORDS[i]}} == : || ${{COMP_WORDS[i-1]}} == : ]]; then
            words[-1]+=${{COMP_WORDS[i]}}
        else
            words+=("${{COMP_WORDS[i]}}")
        fi
        ((i == COMP_CWORD)) && cword=$((${{#words[@]}} - 1))
    done
    local cur=${{words[cword]}}
    [[ $cur == -* ]] && return 0
    local word path="" args=0 skip="" root=()
    for ((i = 1; i < cword; i++)); do
        word=${{words[i]}}
        if [[ -n $skip ]]; then
            skip=""
            continue
        fi
        case "$word" in
            --root) root=(--root "${{words[i+1]}}") ;;
            --root=*) root=("$word") ;;
        esac
        case "$word" in
            --*=*) continue ;;
            -*)
                [[ " $(__{name}_valued_options "$path") " == *" $word "* ]] && skip=1
                continue
                ;;
        esac
        if [[ -z $path ]]; then
            path=$word
        elif [[ $args == 0 && " {groups} " == *" $path "* ]]; then
            path="$path $word"
        else
            args=$((args + 1))
        fi
    done
    [[ -n $skip ]] && return 0
    local how kind
    read -r how kind <<< "$(__{name}_image_args "$path")"
    case "$how" in
        first) ((args == 0)) || return 0 ;;
        all) ;;
        *) return 0 ;;
    esac
    local names
    if [[ $kind == container ]]; then
        names=$("${{words[0]}}" "${{root[@]}}" ps -a --format '{{{{.Names}}}}' 2>/dev/null)
    else
        names=$("${{words[0]}}" "${{root[@]}}" images 2>/dev/null | awk 'NR > 1 && $1 != "<none>" {{ print $1 ":" $2 }}')
    fi
    COMPREPLY=($(compgen -W "$names" -- "$cur"))
    # bash replaces only the part of the word after its last ':'.
    if [[ $cur == *:* && $COMP_WORDBREAKS == *:* ]]; then
        local prefix=${{cur%"${{cur##*:}}"}}
        for i in "${{!COMPREPLY[@]}}"; do
            COMPREPLY[i]=${{COMPREPLY[i]#"$prefix"}}
        done
    fi
    return 0
}}

if [[ "${{BASH_VERSINFO[0]}}" -eq 4 && "${{BASH_VERSINFO[1]}}" -ge 4 || "${{BASH_VERSINFO[0]}}" -gt 4 ]]; then
    complete -F __{name}_complete_images -o nosort -o bashdefault -o default {name}
else
    complete -F __{name}_complete_images -o bashdefault -o default {name}
fi
"#
    )
}
