//! No backend module of `isolab-backends` imports another backend module: what two backends
//! share lives in a root module of the crate that is no backend (`rootfs`, `scratch`, `spawner`,
//! `handle`, `args`, `base`, `lifecycle`) or in `isolab-host` (cgroups, namespaces, mounts).
//!
//! The check reads every `.rs` file of each backend's directory, drops comments and string
//! literals, and collects every path that names a crate-level module: `crate::x`, the groups of
//! `crate::{x, y::z}`, `isolab_backends::x` (in doc tests) and `super::x`. A path naming another backend
//! fails the test with the file and the path.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each backend: its name as a crate-level path segment and its directory below `src/`.
const BACKENDS: [(&str, &str); 5] = [
    ("native", "native"),
    ("container", "container"),
    ("docker", "docker"),
    ("lxc", "lxc"),
    ("vm", "vm"),
];

/// The text of `src` without comments and without the contents of string and char literals.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'r' if matches!(b.get(i + 1), Some(b'#' | b'"'))
                && !i
                    .checked_sub(1)
                    .is_some_and(|p| b[p].is_ascii_alphanumeric() || b[p] == b'_') =>
            {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                i += 2 + hashes;
                while i < b.len() && !b[i..].starts_with(&close) {
                    i += 1;
                }
                i += close.len();
                out.push_str("\"\"");
            }
            b'\'' if b.get(i + 2) == Some(&b'\'') => {
                i += 3;
                out.push_str("' '");
            }
            b'\'' if b.get(i + 1) == Some(&b'\\') => {
                i += 2;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("\"\"");
            }
            c => {
                out.push(char::from(c));
                i += 1;
            }
        }
    }
    out
}

/// The crate-level module each `crate::…` (or `isolab_backends::…`) path in `code` starts with,
/// and every module a `super::` names (a backend's `mod.rs` sits right below the crate root, so
/// `super::docker` there, or `super::super::docker` one level down, is a sibling backend).
fn crate_paths(code: &str) -> BTreeSet<String> {
    let squeezed = squeeze(code);
    let mut found = BTreeSet::new();
    for root in ["crate::", "isolab_backends::", "super::"] {
        let mut rest = squeezed.as_str();
        while let Some(at) = rest.find(root) {
            let before = rest[..at].chars().last();
            rest = &rest[at + root.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                let end = matching_brace(group);
                for item in split_top(&group[..end]) {
                    found.insert(first_module(item));
                }
            } else {
                found.insert(first_module(rest));
            }
        }
    }
    found.remove("");
    found
}

/// `code` with every run of white space made one space, and none left next to `:`, `{`, `}`
/// or `,` (so `crate :: { a, b }` reads `crate::{a,b}` and `use crate` keeps its space).
fn squeeze(code: &str) -> String {
    let words: Vec<&str> = code.split_whitespace().collect();
    let joined = words.join(" ");
    let tight = |c: char| matches!(c, ':' | '{' | '}' | ',');
    let chars: Vec<char> = joined.chars().collect();
    let mut out = String::with_capacity(joined.len());
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' && (i > 0 && tight(chars[i - 1]) || chars.get(i + 1).is_some_and(|&n| tight(n)))
        {
            continue;
        }
        out.push(c);
    }
    out
}

/// `x` of `x::…`.
fn first_module(path: &str) -> String {
    path.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Index of the `}` closing a group whose `{` was just before `s`.
fn matching_brace(s: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    s.len()
}

/// The comma-separated items of a group, at its top level.
fn split_top(s: &str) -> impl Iterator<Item = &str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&s[start..]);
    items.into_iter()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read backend dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// What in `text`, a file of backend `name`, names another backend, one line each.
fn offences(name: &str, file: &Path, text: &str) -> Vec<String> {
    crate_paths(&code_only(text))
        .into_iter()
        .filter(|module| module != name && BACKENDS.iter().any(|(other, _)| other == module))
        .map(|module| format!("{} uses crate::{module}", file.display()))
        .collect()
}

#[test]
fn the_path_collector_sees_plain_grouped_and_nested_paths() {
    let code = code_only(
        "use crate::docker::x;\n// crate::lxc in a comment\nlet s = \"crate::vm\";\n\
         use crate::{cgroup::Cgroup, container::{a, b}};\nuse crate::{native::N, args};\n\
         let f = isolab_backends::vm::f; my_crate::other::x();\nuse crate :: {\n    lxc ,\n};",
    );
    let got = crate_paths(&code);
    let want: BTreeSet<String> = [
        "docker",
        "cgroup",
        "container",
        "native",
        "vm",
        "lxc",
        "args",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(got, want);
}

#[test]
fn an_injected_sibling_import_is_caught() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let file = src.join("lxc/backend.rs");
    let text = std::fs::read_to_string(&file).expect("read lxc/backend.rs");
    assert_eq!(offences("lxc", &file, &text), Vec::<String>::new());
    for injected in [
        "use crate::docker::DockerBackend;",
        "use crate::{args, container::runtime};",
        "fn f() { isolab_backends::vm::kernel::locate(None, None); }",
        "use super::super::native::NativeBackend;",
    ] {
        let got = offences("lxc", &file, &format!("{text}\n{injected}\n"));
        assert_eq!(got.len(), 1, "{injected}: {got:?}");
    }
}

#[test]
fn no_backend_imports_another_backend() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for (name, dir) in BACKENDS {
        let mut files = Vec::new();
        rust_files(&src.join(dir), &mut files);
        assert!(!files.is_empty(), "no sources in {dir}");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read source");
            found.extend(offences(name, &file, &text));
        }
    }
    assert!(
        found.is_empty(),
        "backends import each other:\n{}",
        found.join("\n")
    );
}
