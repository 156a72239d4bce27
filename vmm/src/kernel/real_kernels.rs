//! The stock Debian kernels that `ci/linux/fetch.sh` puts in `ci/linux/cache*/` (Linux 6.1 from
//! bookworm, 6.12 from bookworm-backports), each beside the real System.map of its -dbg
//! package, for the tests that read real images. A missing one is skipped, with the reason.

use std::path::PathBuf;

/// One kernel and its ground truth.
pub struct RealKernel {
    /// Its package, e.g. `linux-image-6.1.0-57-cloud-amd64`.
    pub name: String,
    /// The bzImage.
    pub bzimage: Vec<u8>,
    /// The -dbg package's System.map.
    pub map: String,
}

impl RealKernel {
    /// The address the System.map gives `name`, of any type.
    pub fn map_address(&self, name: &str) -> Option<u64> {
        self.map.lines().find_map(|l| {
            let mut p = l.split_whitespace();
            let addr = p.next()?;
            let _kind = p.next()?;
            (p.next()? == name)
                .then(|| u64::from_str_radix(addr, 16).ok())
                .flatten()
        })
    }
}

/// Every kernel present; each absent one is named on stderr as skipped.
pub fn all() -> Vec<RealKernel> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ci/linux");
    let mut out = Vec::new();
    for dir in ["cache", "cache-backports"] {
        let dir = root.join(dir);
        match (
            std::fs::read(dir.join("vmlinuz")),
            std::fs::read_to_string(dir.join("System.map")),
        ) {
            (Ok(bzimage), Ok(map)) => out.push(RealKernel {
                name: std::fs::read_to_string(dir.join("VERSION"))
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_else(|_| dir.display().to_string()),
                bzimage,
                map,
            }),
            _ => eprintln!(
                "SKIPPED: no {}/vmlinuz and System.map (run ci/linux/fetch.sh)",
                dir.display()
            ),
        }
    }
    out
}
