//! A shard `I/N` (`drvisor ci --shard`): a deterministic, disjoint subset of the specs. The
//! specs are sorted by path and shard I (0-based) takes those whose index is I modulo N, so
//! every CI job that is given the same spec list computes the same split without talking to the
//! others. Pure. A malformed shard's error names no flag; the binary adds that.

use std::path::PathBuf;

/// A shard: index and count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s}: use I/N with 0 <= I < N, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The paths of `shard`, sorted; every path once when there is no shard. Duplicates go.
pub fn select(mut paths: Vec<PathBuf>, shard: Option<Shard>) -> Vec<PathBuf> {
    paths.sort();
    paths.dedup();
    match shard {
        None => paths,
        Some(s) => paths
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % s.count == s.index)
            .map(|(_, p)| p)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The shards of any list, in any order, cover it exactly once.
        #[test]
        fn shards_partition_the_suite(names in proptest::collection::vec("[a-z]{1,6}", 0..40), n in 1usize..9) {
            let paths: Vec<PathBuf> = names.iter().map(PathBuf::from).collect();
            let all: BTreeSet<PathBuf> = paths.iter().cloned().collect();
            let mut seen = BTreeSet::new();
            for i in 0..n {
                let mut shuffled = paths.clone();
                shuffled.reverse();
                for p in select(shuffled, Some(Shard { index: i, count: n })) {
                    prop_assert!(seen.insert(p), "a spec in two shards");
                }
            }
            prop_assert_eq!(seen, all);
        }
    }

    #[test]
    fn shard_syntax() {
        assert_eq!("1/3".parse::<Shard>(), Ok(Shard { index: 1, count: 3 }));
        for bad in ["3/3", "0/0", "1", "a/2", "-1/2"] {
            let err = bad.parse::<Shard>().expect_err(bad);
            // The binary says which flag; the harness names none.
            assert!(!err.contains("--"), "{bad}: {err}");
        }
    }
}
