//! `oltp`: TPC-B-like transactions (pgbench's default script) on an embedded SQLite database
//! in a fresh directory; the stand-in for the paper's OSDB on PostgreSQL.
//!
//! Tables `branches`, `tellers`, `accounts`, `history`; `scale` branches, 10 tellers and
//! [`ACCOUNTS_PER_BRANCH`] accounts per branch. That is a tenth of pgbench's 100 000 accounts per
//! branch, so that setting up the database stays short under QEMU's TCG and when a hundred
//! instances start together (`scale=10` gives pgbench's row count at scale 1). Measured on the
//! 2-core development host: set-up takes about 0.1 s natively at `scale=1` (mostly `fsync`s on
//! ext4) and 0.28 s at `scale=10`; in a TCG microvm 2.8 s and 6 s, most of the fixed part being
//! QEMU translating SQLite's code on first use. Tables are filled by one SQL statement each.
//! The database runs in WAL mode with `synchronous=NORMAL`. One transaction: `BEGIN`; add a
//! random delta to a random account, read the account's balance back, add the delta to a random
//! teller and to that account's branch, insert a history row; `COMMIT`.
//!
//! Metrics: `tps` (committed transactions/s), `p50_ms`, `p99_ms` (latency of one transaction),
//! `setup_s` (creating and filling the tables, not part of the measurement), `ops`
//! (transactions), `elapsed_s`.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::latency::{Histogram, Rng};
use super::workdir::WorkDir;
use super::{WorkloadError, report_totals};
use crate::emit::Emitter;
use crate::measure::{Measured, check_stop, to_f64};
use crate::params::Params;

const W: &str = "oltp";

/// Accounts per branch (pgbench: 100 000).
pub(crate) const ACCOUNTS_PER_BRANCH: u64 = 10_000;
/// Tellers per branch (as pgbench).
const TELLERS_PER_BRANCH: u64 = 10;
/// pgbench's account filler: 84 characters.
const FILLER: &str =
    "                                                                                    ";

/// `oltp`: see the module documentation.
pub(crate) fn oltp(params: &Params, em: &mut Emitter<'_>) -> Result<(), WorkloadError> {
    let scale = params.count("scale", 1);
    let dir = WorkDir::create(W, params.path("dir"))?;
    let setup_start = Instant::now();
    let mut bank = Bank::create(&dir.path().join("oltp.db"), scale)?;
    let setup = setup_start.elapsed();

    let mut rng = Rng::from_time();
    let mut hist = Histogram::default();
    let duration = params.run_duration();
    let start = Instant::now();
    let mut now = start;
    while now.duration_since(start) < duration {
        check_stop()?;
        let t0 = now;
        bank.transaction(&mut rng)?;
        now = Instant::now();
        hist.record(now - t0);
    }
    let m = Measured {
        ops: hist.count(),
        elapsed: now - start,
    };
    drop(bank);
    drop(dir);
    let ms = |q| to_f64(hist.quantile_ns(q).unwrap_or(0)) / 1e6;
    em.summary("tps", m.ops_per_s(), "transactions/s", true)?;
    em.summary("p50_ms", ms(0.5), "ms", false)?;
    em.summary("p99_ms", ms(0.99), "ms", false)?;
    em.summary("setup_s", setup.as_secs_f64(), "s", false)?;
    report_totals(em, &m)
}

/// The database and its size.
struct Bank {
    conn: Connection,
    branches: u64,
}

fn sql(what: &'static str) -> impl FnOnce(rusqlite::Error) -> WorkloadError {
    move |source| WorkloadError::Sqlite {
        workload: W,
        what,
        source,
    }
}

/// SQLite integers are i64; every count here is far below that.
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Bank {
    /// Creates the tables at `path` and fills them in one transaction.
    fn create(path: &Path, branches: u64) -> Result<Self, WorkloadError> {
        let mut conn = Connection::open(path).map_err(sql("open the database"))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(sql("set the busy timeout"))?;
        // journal_mode answers with a row, so it is queried rather than executed.
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(sql("switch to WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            eprintln!("isolab-workload: {W}: journal mode is {mode}, not WAL, on this filesystem");
        }
        conn.execute_batch(
            "PRAGMA synchronous=NORMAL;
             CREATE TABLE branches (bid INTEGER PRIMARY KEY, bbalance INTEGER NOT NULL, filler TEXT);
             CREATE TABLE tellers (tid INTEGER PRIMARY KEY, bid INTEGER NOT NULL,
                                   tbalance INTEGER NOT NULL, filler TEXT);
             CREATE TABLE accounts (aid INTEGER PRIMARY KEY, bid INTEGER NOT NULL,
                                    abalance INTEGER NOT NULL, filler TEXT);
             CREATE TABLE history (tid INTEGER, bid INTEGER, aid INTEGER, delta INTEGER,
                                   mtime INTEGER, filler TEXT);",
        )
        .map_err(sql("create the tables"))?;
        // One statement per table (a recursive count), so no row crosses into Rust: this is
        // what keeps the set-up short under emulation.
        check_stop()?;
        let tx = conn.transaction().map_err(sql("begin the set-up"))?;
        let fill = |table: &str, rows: u64, select: &str| -> Result<(), WorkloadError> {
            let statement = format!(
                "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?1) \
                 INSERT INTO {table} SELECT {select} FROM n"
            );
            tx.execute(&statement, [int(rows)])
                .map(drop)
                .map_err(sql("fill a table"))
        };
        fill("branches", branches, "x, 0, NULL")?;
        fill(
            "tellers",
            branches * TELLERS_PER_BRANCH,
            &format!("x, (x - 1) / {TELLERS_PER_BRANCH} + 1, 0, NULL"),
        )?;
        fill(
            "accounts",
            branches * ACCOUNTS_PER_BRANCH,
            &format!("x, (x - 1) / {ACCOUNTS_PER_BRANCH} + 1, 0, '{FILLER}'"),
        )?;
        tx.commit().map_err(sql("commit the set-up"))?;
        Ok(Self { conn, branches })
    }

    /// One TPC-B transaction with random account, teller and delta.
    fn transaction(&mut self, rng: &mut Rng) -> Result<(), WorkloadError> {
        let aid = int(rng.below(self.branches * ACCOUNTS_PER_BRANCH) + 1);
        let tid = int(rng.below(self.branches * TELLERS_PER_BRANCH) + 1);
        let bid = (aid - 1) / int(ACCOUNTS_PER_BRANCH) + 1;
        let delta = int(rng.below(10_001)) - 5000;
        let mtime = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| int(d.as_secs()));
        let tx = self.conn.transaction().map_err(sql("begin"))?;
        tx.prepare_cached("UPDATE accounts SET abalance = abalance + ?1 WHERE aid = ?2")
            .and_then(|mut s| s.execute([delta, aid]))
            .map_err(sql("update an account"))?;
        let balance: i64 = tx
            .prepare_cached("SELECT abalance FROM accounts WHERE aid = ?1")
            .and_then(|mut s| s.query_row([aid], |r| r.get(0)))
            .map_err(sql("read an account"))?;
        std::hint::black_box(balance);
        tx.prepare_cached("UPDATE tellers SET tbalance = tbalance + ?1 WHERE tid = ?2")
            .and_then(|mut s| s.execute([delta, tid]))
            .map_err(sql("update a teller"))?;
        tx.prepare_cached("UPDATE branches SET bbalance = bbalance + ?1 WHERE bid = ?2")
            .and_then(|mut s| s.execute([delta, bid]))
            .map_err(sql("update a branch"))?;
        tx.prepare_cached(
            "INSERT INTO history (tid, bid, aid, delta, mtime) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut s| s.execute([tid, bid, aid, delta, mtime]))
        .map_err(sql("insert history"))?;
        tx.commit().map_err(sql("commit"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(conn: &Connection, query: &str) -> i64 {
        conn.query_row(query, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn transactions_keep_the_books_balanced() {
        let dir = WorkDir::create_in(W, &std::env::temp_dir()).unwrap();
        let mut bank = Bank::create(&dir.path().join("t.db"), 2).unwrap();
        let c = &bank.conn;
        assert_eq!(
            sum(c, "SELECT count(*) FROM accounts"),
            2 * int(ACCOUNTS_PER_BRANCH)
        );
        assert_eq!(sum(c, "SELECT count(*) FROM tellers"), 20);
        let mut rng = Rng::new(7);
        for _ in 0..200 {
            bank.transaction(&mut rng).unwrap();
        }
        let c = &bank.conn;
        let history = sum(c, "SELECT coalesce(sum(delta), 0) FROM history");
        assert_eq!(sum(c, "SELECT count(*) FROM history"), 200);
        assert_eq!(sum(c, "SELECT sum(abalance) FROM accounts"), history);
        assert_eq!(sum(c, "SELECT sum(tbalance) FROM tellers"), history);
        assert_eq!(sum(c, "SELECT sum(bbalance) FROM branches"), history);
        // Every history row's branch owns its account.
        assert_eq!(
            sum(
                c,
                "SELECT count(*) FROM history h JOIN accounts a USING (aid) WHERE a.bid != h.bid"
            ),
            0
        );
    }
}
