use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;

fn is_root() -> bool {
    let root = euid() == 0;
    assert!(root || std::env::var_os("CI").is_none(), "CI runs as root");
    if !root {
        eprintln!("skipping: changing a directory's owner needs root");
    }
    root
}

#[test]
fn a_missing_state_dir_is_created_0700_with_its_subdirectories() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("a/state");
    let dir = StateDir::open(&path).unwrap();
    assert_eq!(dir.root(), path);
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
    assert_eq!(meta.uid(), euid());
    for sub in [CONTAINERS, SCRATCH, VM] {
        let m = std::fs::symlink_metadata(path.join(sub)).unwrap();
        assert!(m.is_dir(), "{sub}");
        assert_eq!(m.permissions().mode() & 0o7777, 0o700, "{sub}");
    }
    // Opening again is fine.
    StateDir::open(&path).unwrap();
    let e = StateDir::open(Path::new("relative/state")).unwrap_err();
    assert!(e.to_string().contains("absolute"), "{e}");
}

#[test]
fn a_world_writable_state_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state");
    std::fs::create_dir(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let e = StateDir::open(&path).unwrap_err();
    assert!(matches!(e, StateDirError::Mode { mode: 0o1777, .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("1777") && text.contains("0700"), "{text}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o770)).unwrap();
    assert!(matches!(
        StateDir::open(&path),
        Err(StateDirError::Mode { .. })
    ));
    assert!(
        !path.join(SCRATCH).exists(),
        "nothing is made in a refused dir"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o750)).unwrap();
    StateDir::open(&path).unwrap();
}

#[test]
fn a_state_dir_of_another_uid_is_refused() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state");
    std::fs::create_dir(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    let e = StateDir::open(&path).unwrap_err();
    assert!(
        matches!(
            e,
            StateDirError::Owner {
                found: 65534,
                expected: 0,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("uid 65534"), "{e}");
    assert!(!path.join(SCRATCH).exists());
}

#[test]
fn a_symlinked_state_dir_is_refused_and_its_target_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("elsewhere");
    std::fs::create_dir(&target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = tmp.path().join("state");
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let e = StateDir::open(&path).unwrap_err();
    assert!(matches!(e, StateDirError::Symlink { .. }), "{e}");
    assert!(e.to_string().contains(&target.display().to_string()), "{e}");
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        StateDir::open(&file),
        Err(StateDirError::NotDirectory { .. })
    ));
}

#[test]
fn planted_symlinks_are_not_followed_when_creating() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    std::fs::create_dir(&base).unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("precious"), b"keep").unwrap();
    // A link where an intermediate directory goes.
    std::os::unix::fs::symlink(&outside, base.join("agent")).unwrap();
    let e = create_dirs_beneath(&base, Path::new("agent/trial/i0")).unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    assert!(!outside.join("trial").exists());
    // A link where a file goes, to an existing file and to a missing one.
    std::os::unix::fs::symlink(outside.join("precious"), base.join("disk.raw")).unwrap();
    assert!(create_file(&base.join("disk.raw")).is_err());
    std::os::unix::fs::symlink(outside.join("new"), base.join("initrd")).unwrap();
    assert!(create_file(&base.join("initrd")).is_err());
    assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"keep");
    assert!(!outside.join("new").exists());
    let mut names: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["precious"]);
    // Without links, it works.
    let made = create_dirs_beneath(&base, Path::new("a/b")).unwrap();
    assert!(made.is_dir());
    assert!(create_dirs_beneath(&base, Path::new("../x")).is_err());
    create_file(&made.join("f")).unwrap();
    assert!(
        create_file(&made.join("f")).is_err(),
        "never an existing file"
    );
}

#[test]
fn what_a_previous_boot_left_is_removed_once() {
    let Some(boot) = boot_id() else {
        assert!(std::env::var_os("CI").is_none(), "CI has a boot id");
        eprintln!("skipping: no /proc/sys/kernel/random/boot_id");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state");
    StateDir::open(&path).unwrap();
    assert_eq!(
        std::fs::read_to_string(path.join("boot_id"))
            .unwrap()
            .trim(),
        boot
    );
    // Same boot: another agent's directories stay.
    let live = path.join(VM).join("a-1.1-0/t-a0");
    std::fs::create_dir_all(&live).unwrap();
    StateDir::open(&path).unwrap();
    assert!(live.exists(), "removed on the same boot");
    // Another boot: every agent's directories go, links inside are not followed.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("precious"), b"keep").unwrap();
    std::os::unix::fs::symlink(outside.path(), live.join("link")).unwrap();
    std::fs::create_dir_all(path.join(SCRATCH).join("a-1.1-0/t-a0/i0")).unwrap();
    std::fs::create_dir_all(path.join(CONTAINERS).join("a-1.1-0/runtime")).unwrap();
    std::fs::write(path.join("boot_id"), "another-boot\n").unwrap();
    StateDir::open(&path).unwrap();
    for sub in [CONTAINERS, SCRATCH, VM] {
        assert_eq!(
            std::fs::read_dir(path.join(sub)).unwrap().count(),
            0,
            "{sub} kept what a previous boot left"
        );
    }
    assert_eq!(
        std::fs::read_to_string(path.join("boot_id"))
            .unwrap()
            .trim(),
        boot
    );
    assert_eq!(
        std::fs::read(outside.path().join("precious")).unwrap(),
        b"keep"
    );
}
