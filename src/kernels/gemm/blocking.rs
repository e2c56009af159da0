//! Cache blocking chosen from the caches of the CPU that runs it, not fixed for one.
//!
//! The packed product keeps one `MR x KC` panel of the left operand in L1 while it streams
//! `KC x NR` panels of the right operand past it, and keeps the `KC x NC` block of the right
//! operand in L2 while the panels of the left operand take turns; each is given half of its cache
//! (the other half is for the streamed operand and the destination). A Zen 4 core (32 KiB L1d,
//! 1 MiB L2) and a Sapphire Rapids core (48 KiB, 2 MiB) thus get different blocks from the same
//! code.

use std::sync::OnceLock;

use super::micro::MicroKernel;

/// Data-cache sizes in bytes of one core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Caches {
    pub l1d: usize,
    pub l2: usize,
}

impl Caches {
    /// What a core of any x86-64 server of the last decade has at least; used when the
    /// operating system does not say.
    const FALLBACK: Caches = Caches {
        l1d: 32 * 1024,
        l2: 1024 * 1024,
    };

    /// This machine's caches, read once (Linux's sysfs; the fallback elsewhere).
    pub fn of_this_cpu() -> Caches {
        static CACHES: OnceLock<Caches> = OnceLock::new();
        *CACHES.get_or_init(|| read_sysfs().unwrap_or(Caches::FALLBACK))
    }
}

/// Reads the L1 data and L2 sizes of CPU 0 from `/sys/devices/system/cpu/cpu0/cache`.
fn read_sysfs() -> Option<Caches> {
    let mut caches = Caches { l1d: 0, l2: 0 };
    for index in 0..8 {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{index}");
        let read = |name: &str| std::fs::read_to_string(format!("{dir}/{name}")).ok();
        let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size"))
        else {
            continue;
        };
        let Some(bytes) = parse_size(&size) else {
            continue;
        };
        match (level.trim(), kind.trim()) {
            ("1", "Data") => caches.l1d = bytes,
            ("2", "Unified" | "Data") => caches.l2 = bytes,
            _ => {}
        }
    }
    (caches.l1d > 0 && caches.l2 > 0).then_some(caches)
}

/// `"32K"`, `"1024K"`, `"2M"` or a plain byte count.
fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let value: usize = digits.parse().ok()?;
    let scale = match unit.trim() {
        "" => 1,
        "K" | "KB" | "KiB" => 1024,
        "M" | "MB" | "MiB" => 1024 * 1024,
        _ => return None,
    };
    value.checked_mul(scale)
}

/// The depth and width of the blocks for one kernel on one CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Blocking {
    /// Depth of a block: the `p` range one pass of micro-kernels sums over.
    pub kc: usize,
    /// Columns of the right operand packed at a time (a multiple of the kernel's `NR`).
    pub nc: usize,
}

impl Blocking {
    /// Half of L1 for the left panel, half of L2 for the right block.
    pub fn for_caches(kernel: &MicroKernel, caches: Caches) -> Blocking {
        let float = std::mem::size_of::<f32>();
        let kc = (caches.l1d / 2 / (kernel.mr * float)).clamp(64, 512) / 16 * 16;
        let nc = (caches.l2 / 2 / (kc * float)).max(kernel.nr) / kernel.nr * kernel.nr;
        Blocking { kc, nc }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm::micro::for_level;
    use crate::util::simd::Level;

    #[test]
    fn sizes_parse_as_sysfs_writes_them() {
        assert_eq!(parse_size("32K\n"), Some(32 * 1024));
        assert_eq!(parse_size("2048K"), Some(2048 * 1024));
        assert_eq!(parse_size("2M"), Some(2 * 1024 * 1024));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("12Q"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn blocks_follow_the_caches() {
        let kernel = for_level(Level::Avx512);
        let zen4 = Blocking::for_caches(
            &kernel,
            Caches {
                l1d: 32 << 10,
                l2: 1 << 20,
            },
        );
        let spr = Blocking::for_caches(
            &kernel,
            Caches {
                l1d: 48 << 10,
                l2: 2 << 20,
            },
        );
        assert!(spr.kc > zen4.kc && spr.nc >= zen4.nc, "{zen4:?} {spr:?}");
        for b in [zen4, spr] {
            assert_eq!(b.nc % kernel.nr, 0);
            assert!(b.kc * kernel.mr * 4 <= 48 << 10);
        }
        // A tiny or absurd cache still gives a usable block.
        let tiny = Blocking::for_caches(&kernel, Caches { l1d: 1, l2: 1 });
        assert!(tiny.kc >= 64 && tiny.nc >= kernel.nr);
    }
}
