//! Small pure parsers for cgroup statistics files, shared by v1 and v2.

use std::collections::BTreeMap;

/// Clock ticks per second in v1 `cpuacct.stat` (`USER_HZ`, 100 on every Linux ABI we run on).
pub const USER_HZ: u64 = 100;

/// One number, as in `memory.current` or `pids.current` (surrounding whitespace allowed).
pub fn parse_u64(text: &str) -> Result<u64, String> {
    let t = text.trim();
    t.parse().map_err(|e| format!("{t:?} is not a number: {e}"))
}

/// Flat-keyed file (`key value` per line), as in `cpu.stat`, `memory.events`, `pids.events`,
/// `memory.oom_control`, `cpuacct.stat`. Lines whose value is not a number are skipped.
pub fn parse_flat_keyed(text: &str) -> BTreeMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.split_whitespace();
            let key = it.next()?;
            let value = it.next()?.parse().ok()?;
            Some((key, value))
        })
        .collect()
}

/// v1 `blkio.*io_service_bytes*`: sums the `Read` and `Write` lines over all devices
/// (`8:0 Read 4096`); the per-device and final `Total` lines are ignored.
pub fn parse_blkio_service_bytes(text: &str) -> (u64, u64) {
    let (mut read, mut write) = (0u64, 0u64);
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [_dev, op, value] = fields[..] {
            let Ok(v) = value.parse::<u64>() else {
                continue;
            };
            match op {
                "Read" => read = read.saturating_add(v),
                "Write" => write = write.saturating_add(v),
                _ => {}
            }
        }
    }
    (read, write)
}

/// v2 `io.stat`: sums `rbytes=` and `wbytes=` over all devices
/// (`8:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0`).
pub fn parse_io_stat(text: &str) -> (u64, u64) {
    let (mut read, mut write) = (0u64, 0u64);
    for line in text.lines() {
        for kv in line.split_whitespace().skip(1) {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(v) = v.parse::<u64>() else {
                continue;
            };
            match k {
                "rbytes" => read = read.saturating_add(v),
                "wbytes" => write = write.saturating_add(v),
                _ => {}
            }
        }
    }
    (read, write)
}

/// `USER_HZ` ticks to nanoseconds.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    ticks.saturating_mul(1_000_000_000 / USER_HZ)
}

/// Microseconds to nanoseconds.
pub fn usec_to_ns(usec: u64) -> u64 {
    usec.saturating_mul(1_000)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn flat_keyed_reads_oom_control_and_skips_junk() {
        let text = "oom_kill_disable 0\nunder_oom 1\noom_kill 3\n\nbogus line here\nnan x\n";
        let m = parse_flat_keyed(text);
        assert_eq!(m.get("under_oom"), Some(&1));
        assert_eq!(m.get("oom_kill"), Some(&3));
        assert_eq!(m.get("nan"), None);
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn blkio_sums_read_and_write_over_devices() {
        let text = "8:0 Read 4096\n8:0 Write 100\n8:0 Sync 4196\n8:0 Async 0\n8:0 Discard 0\n\
                    8:0 Total 4196\n8:16 Read 1\n8:16 Write 2\n8:16 Total 3\nTotal 4199\n";
        assert_eq!(parse_blkio_service_bytes(text), (4097, 102));
        assert_eq!(parse_blkio_service_bytes("Total 0\n"), (0, 0));
    }

    #[test]
    fn io_stat_sums_bytes_over_devices() {
        let text = "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n\
                    259:0 rbytes=5 wbytes=7 rios=1 wios=1 dbytes=0 dios=0\n";
        assert_eq!(parse_io_stat(text), (15, 27));
    }

    #[test]
    fn u64_parse_trims_and_rejects_words() {
        assert_eq!(parse_u64(" 42\n"), Ok(42));
        assert!(parse_u64("max").is_err());
        assert_eq!(ticks_to_ns(3), 30_000_000);
        assert_eq!(usec_to_ns(7), 7_000);
    }

    proptest! {
        #[test]
        fn io_stat_sum_matches_generated_lines(
            devs in prop::collection::vec((0u32..300, 0u32..64, 0u64..1u64 << 40, 0u64..1u64 << 40), 0..8)
        ) {
            let text: String = devs
                .iter()
                .map(|(ma, mi, r, w)| format!("{ma}:{mi} rbytes={r} wbytes={w} rios=3 wios=4\n"))
                .collect();
            let want = devs.iter().fold((0, 0), |(r, w), d| (r + d.2, w + d.3));
            prop_assert_eq!(parse_io_stat(&text), want);
        }

        #[test]
        fn blkio_sum_matches_generated_lines(
            devs in prop::collection::vec((0u32..300, 0u32..64, 0u64..1u64 << 40, 0u64..1u64 << 40), 0..8)
        ) {
            let mut text = String::new();
            for (ma, mi, r, w) in &devs {
                text += &format!("{ma}:{mi} Read {r}\n{ma}:{mi} Write {w}\n{ma}:{mi} Total {}\n", r + w);
            }
            text += "Total 1\n";
            let want = devs.iter().fold((0, 0), |(r, w), d| (r + d.2, w + d.3));
            prop_assert_eq!(parse_blkio_service_bytes(&text), want);
        }

        #[test]
        fn flat_keyed_round_trips(map in prop::collection::btree_map("[a-z_]{1,12}", any::<u64>(), 0..10)) {
            let text: String = map.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
            let parsed = parse_flat_keyed(&text);
            let want: BTreeMap<&str, u64> = map.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            prop_assert_eq!(parsed, want);
        }

        #[test]
        fn parsers_never_panic(s in ".*") {
            let _ = parse_flat_keyed(&s);
            let _ = parse_io_stat(&s);
            let _ = parse_blkio_service_bytes(&s);
            let _ = parse_u64(&s);
        }
    }
}
