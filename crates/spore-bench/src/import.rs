//! Import speed: hashing plus outboard of a large file already in the page
//! cache, against `b3sum` on the same file in the same run (DESIGN.md §6:
//! spore must reach 90% of b3sum's speed).

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use spore_store::{ImportMode, Store};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Size of the generated test file in MiB.
    #[arg(long, default_value_t = 2048)]
    size_mib: u64,
    /// Use this file instead of generating one.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Timed runs per tool; the best and the median are printed.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The b3sum binary to compare with.
    #[arg(long, default_value = "b3sum")]
    b3sum: PathBuf,
    /// Where to generate the file (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub(crate) fn run(args: Args) -> Result<()> {
    let scratch = crate::scratch_dir(args.dir.as_deref())?;
    let file = match &args.file {
        Some(file) => file.clone(),
        None => generate(&scratch.path().join("input.bin"), args.size_mib << 20)?,
    };
    let size = std::fs::metadata(&file)?.len();
    warm_page_cache(&file)?;
    let version = Command::new(&args.b3sum)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} (install b3sum)", args.b3sum.display()))?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    println!(
        "file: {} ({} MiB, in page cache); {} runs each",
        file.display(),
        size >> 20,
        args.runs
    );

    let mut b3sum_times = Vec::new();
    let mut b3sum_hash = String::new();
    let mut spore_times = Vec::new();
    let mut spore_hash = String::new();
    // interleave the tools so that both see the same machine conditions
    for run in 0..args.runs {
        let start = Instant::now();
        let out = Command::new(&args.b3sum).arg(&file).output()?;
        b3sum_times.push(start.elapsed());
        if !out.status.success() {
            bail!("b3sum failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        b3sum_hash = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string();

        let store_dir = scratch.path().join(format!("store-{run}"));
        let store = Store::open(&store_dir)?;
        let start = Instant::now();
        let added = store.add_path(&file, ImportMode::InPlace, &())?;
        spore_times.push(start.elapsed());
        spore_hash = added.hash.to_hex();
        drop(store);
        std::fs::remove_dir_all(&store_dir)?;
    }
    if b3sum_hash != spore_hash {
        bail!("hashes differ: b3sum {b3sum_hash}, spore {spore_hash}");
    }
    let gib = size as f64 / f64::from(1u32 << 30);
    let report = |name: &str, times: &mut Vec<Duration>| {
        times.sort();
        let best = times[0].as_secs_f64();
        let median = times[times.len() / 2].as_secs_f64();
        println!(
            "{name:<34} best {best:>7.3} s  {:>6.2} GiB/s   median {median:>7.3} s  {:>6.2} GiB/s",
            gib / best,
            gib / median
        );
        (best, median)
    };
    println!("hash: {spore_hash} (both agree)");
    let (b_best, b_median) = report(&format!("{version} (hash only)"), &mut b3sum_times);
    let (s_best, s_median) = report("spore add (hash + outboard + db)", &mut spore_times);
    println!(
        "spore / b3sum speed: best {:.0}%, median {:.0}%  (target >= 90%)",
        100.0 * b_best / s_best,
        100.0 * b_median / s_median
    );
    Ok(())
}

/// Writes `size` pseudo-random bytes (fast, incompressible enough for hashing).
pub(crate) fn generate(path: &Path, size: u64) -> Result<PathBuf> {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for word in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(path.to_path_buf())
}

fn warm_page_cache(path: &Path) -> Result<()> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    while file.read(&mut buf)? > 0 {}
    Ok(())
}
