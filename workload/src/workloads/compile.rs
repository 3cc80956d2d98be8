//! The hidden `__compile OUT SEED SIZE` subcommand that every `build` job executes: generate
//! `SIZE` bytes of C-like source text from `SEED`, "compile" it (LZ77-compress it and checksum
//! the result) and write the object to `OUT`. CPU-, memory- and exec-bound like a compiler run,
//! with no dependency.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use super::latency::Rng;

/// The subcommand's name.
pub(crate) const COMPILE_SUBCOMMAND: &str = "__compile";

/// Hash table bits for match finding.
const HASH_BITS: u32 = 15;
/// Farthest back a match may reach.
const WINDOW: usize = 65_535;
/// Shortest match worth a token.
const MIN_MATCH: usize = 4;
/// Longest match in one token.
const MAX_MATCH: usize = MIN_MATCH + 127;
/// Longest literal run in one token.
const MAX_LITERALS: usize = 128;

/// Runs the subcommand on the arguments after its name; exit 0 on success, 2 on bad arguments,
/// 1 when the output cannot be written.
pub(crate) fn compile_main(mut args: impl Iterator<Item = OsString>) -> ExitCode {
    let parsed = (|| {
        let out = PathBuf::from(args.next()?);
        let seed: u64 = args.next()?.to_str()?.parse().ok()?;
        let size: usize = args.next()?.to_str()?.parse().ok()?;
        args.next().is_none().then_some((out, seed, size))
    })();
    let Some((out, seed, size)) = parsed else {
        eprintln!("isolab-workload: usage: {COMPILE_SUBCOMMAND} OUT SEED SIZE");
        return ExitCode::from(2);
    };
    let source = generate(seed, size);
    let mut object = compress(&source);
    object.extend_from_slice(&fnv1a(&source).to_le_bytes());
    match std::fs::write(&out, &object) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "isolab-workload: {COMPILE_SUBCOMMAND}: write {}: {e}",
                out.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// `size` bytes of plausible C: functions of statements over a few hundred identifiers.
pub(crate) fn generate(seed: u64, size: usize) -> Vec<u8> {
    const TYPES: &[&str] = &[
        "int",
        "long",
        "unsigned",
        "char *",
        "struct node *",
        "size_t",
    ];
    const OPS: &[&str] = &["+", "-", "*", "^", "&", "|", "<<", ">>"];
    let mut rng = Rng::new(seed);
    let mut text = String::with_capacity(size + 128);
    let pick = |rng: &mut Rng, list: &[&'static str]| -> &'static str {
        list[usize::try_from(rng.below(list.len() as u64)).unwrap_or(0)]
    };
    while text.len() < size {
        let f = rng.below(10_000);
        let ty = pick(&mut rng, TYPES);
        text.push_str(&format!("static {ty} fn_{f}({ty} a, int b)\n{{\n"));
        for _ in 0..1 + rng.below(8) {
            let (x, y, k) = (rng.below(300), rng.below(300), rng.below(1 << 16));
            let op = pick(&mut rng, OPS);
            match rng.below(3) {
                0 => text.push_str(&format!("\tv{x} = v{y} {op} {k};\n")),
                1 => text.push_str(&format!(
                    "\tif (v{x} > {k})\n\t\treturn fn_{y}(a, b {op} v{x});\n"
                )),
                _ => text.push_str(&format!(
                    "\tfor (int i = 0; i < {k}; i++)\n\t\tv{x} {op}= i;\n"
                )),
            }
        }
        text.push_str("\treturn a;\n}\n\n");
    }
    let mut bytes = text.into_bytes();
    bytes.truncate(size);
    bytes
}

fn hash4(b: &[u8]) -> usize {
    let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    usize::try_from(v.wrapping_mul(2_654_435_761) >> (32 - HASH_BITS)).unwrap_or(0)
}

/// LZ77 with a one-entry hash table. Tokens: a control byte below 0x80 is a run of
/// `byte + 1` literals that follow; from 0x80 on it is a match of `(byte & 0x7f) + 4` bytes at
/// the little-endian 16-bit distance that follows.
pub(crate) fn compress(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 2 + 16);
    let mut table = vec![usize::MAX; 1 << HASH_BITS];
    let mut literals_from = 0;
    let mut i = 0;
    while i + MIN_MATCH <= input.len() {
        let h = hash4(&input[i..]);
        let candidate = table[h];
        table[h] = i;
        if candidate != usize::MAX
            && i - candidate <= WINDOW
            && input[candidate..candidate + MIN_MATCH] == input[i..i + MIN_MATCH]
        {
            let mut len = MIN_MATCH;
            while len < MAX_MATCH
                && i + len < input.len()
                && input[candidate + len] == input[i + len]
            {
                len += 1;
            }
            flush_literals(&mut out, &input[literals_from..i]);
            out.push(0x80 | u8::try_from(len - MIN_MATCH).unwrap_or(0));
            out.extend_from_slice(&u16::try_from(i - candidate).unwrap_or(0).to_le_bytes());
            i += len;
            literals_from = i;
        } else {
            i += 1;
        }
    }
    flush_literals(&mut out, &input[literals_from..]);
    out
}

fn flush_literals(out: &mut Vec<u8>, mut literals: &[u8]) {
    while !literals.is_empty() {
        let n = literals.len().min(MAX_LITERALS);
        out.push(u8::try_from(n - 1).unwrap_or(0));
        out.extend_from_slice(&literals[..n]);
        literals = &literals[n..];
    }
}

/// 64-bit FNV-1a.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decompress(mut packed: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some((&control, rest)) = packed.split_first() {
            if control < 0x80 {
                let n = usize::from(control) + 1;
                out.extend_from_slice(&rest[..n]);
                packed = &rest[n..];
            } else {
                let len = usize::from(control & 0x7f) + MIN_MATCH;
                let dist = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
                for _ in 0..len {
                    out.push(out[out.len() - dist]);
                }
                packed = &rest[2..];
            }
        }
        out
    }

    #[test]
    fn generated_source_has_the_size_and_depends_on_the_seed() {
        let a = generate(1, 10_000);
        assert_eq!(a.len(), 10_000);
        assert_eq!(a, generate(1, 10_000));
        assert_ne!(a, generate(2, 10_000));
        assert!(std::str::from_utf8(&a).unwrap().contains("return"));
    }

    #[test]
    fn compression_round_trips_and_compresses() {
        for input in [
            generate(3, 50_000),
            vec![7u8; 1000],
            b"abc".to_vec(),
            Vec::new(),
        ] {
            let packed = compress(&input);
            assert_eq!(decompress(&packed), input);
        }
        let src = generate(4, 100_000);
        assert!(compress(&src).len() < src.len() / 2);
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
    }
}
