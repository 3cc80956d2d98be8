//! Finding a host binary: in `PATH`, then in the sbin and bin directories a root shell would
//! search (the agent may run with a minimal `PATH`), and the `PATH` children get.

use std::path::{Path, PathBuf};

/// `PATH` for the tools the agent runs (`ip`, runtimes, `dockerd`, `lxc-execute`).
pub const SEARCH_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `name` as given when it holds a `/` (and is a file), else the first file `name` in `PATH`
/// or [`SEARCH_PATH`].
pub fn find_binary(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name)).filter(|p| p.is_file());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(SEARCH_PATH.split(':'))
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_shell_and_not_a_made_up_name() {
        assert!(find_binary("sh").is_some_and(|p| p.is_file()));
        assert!(find_binary("isolab-no-such-binary-here").is_none());
        assert!(find_binary("/no/such/dir/sh").is_none());
    }
}
