//! The container images build the workspace: cargo refuses to load a workspace with a member
//! missing, so every member of the root `Cargo.toml` must be copied into each image's build stage.
//! (A new crate added to the workspace but not to `Containerfile.*` breaks the image build, which
//! no other test here runs.)

use std::path::Path;

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tls crate sits in the repository root")
}

/// The `members = [...]` of the root manifest (one line or several).
fn workspace_members() -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join("Cargo.toml")).expect("root Cargo.toml");
    let start = text.find("members").expect("a members list") + "members".len();
    let open = start + text[start..].find('[').expect("members = [");
    let close = open + text[open..].find(']').expect("closing ]");
    text[open + 1..close]
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_owned())
        .filter(|m| !m.is_empty())
        .collect()
}

#[test]
fn every_image_copies_every_workspace_member() {
    let members = workspace_members();
    assert!(
        members.len() >= 5 && members.iter().any(|m| m == "agent"),
        "members parsed wrongly: {members:?}"
    );
    for image in ["Containerfile.agent", "Containerfile.coordinator"] {
        let text = std::fs::read_to_string(repo_root().join(image)).expect("a Containerfile");
        let copied: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("COPY "))
            .filter(|rest| !rest.starts_with("--"))
            .filter_map(|rest| {
                let mut parts = rest.split_whitespace();
                let (src, dst) = (parts.next()?, parts.next()?);
                (src == dst).then_some(src)
            })
            .collect();
        let missing: Vec<&String> = members
            .iter()
            .filter(|m| !copied.contains(&m.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "{image} does not copy workspace member(s) {missing:?} into its build stage; add `COPY <member> <member>`"
        );
    }
}
