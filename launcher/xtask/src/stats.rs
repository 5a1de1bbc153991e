//! Summary statistics over per-run times.

use anyhow::{Result, ensure};

/// Min, median and p95 of one command's runs, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub runs: usize,
    pub min: f64,
    pub median: f64,
    pub p95: f64,
}

impl Summary {
    pub fn from_millis(values: &[f64]) -> Result<Summary> {
        ensure!(!values.is_empty(), "no runs to summarise");
        ensure!(
            values.iter().all(|v| v.is_finite()),
            "a run has no finite time"
        );
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Ok(Summary {
            runs: v.len(),
            min: v[0],
            median: median(&v),
            p95: percentile_nearest_rank(&v, 95),
        })
    }
}

/// The nearest-rank `p`th percentile of unsorted values (see
/// [`percentile_nearest_rank`]): the p99 that [`Summary`] does not keep.
pub fn percentile(values: &[f64], p: usize) -> Result<f64> {
    ensure!(!values.is_empty(), "no values to take a percentile of");
    ensure!(p <= 100, "percentile {p} is over 100");
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    Ok(percentile_nearest_rank(&v, p))
}

/// The median of sorted values; the mean of the two middle ones when
/// their number is even (as hyperfine computes it).
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The nearest-rank percentile of sorted values: the smallest value that
/// at least `p` percent of the runs do not exceed. Always a measured time,
/// never an interpolation.
fn percentile_nearest_rank(sorted: &[f64], p: usize) -> f64 {
    let n = sorted.len();
    let rank = (p * n).div_ceil(100).max(1);
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_and_even_medians() {
        let odd = Summary::from_millis(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((odd.min, odd.median), (1.0, 2.0));
        let even = Summary::from_millis(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(even.median, 2.5);
    }

    #[test]
    fn p95_is_nearest_rank() {
        // 1..=100: the 95th value.
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(Summary::from_millis(&v).unwrap().p95, 95.0);
        // 50 runs: rank ceil(47.5) = 48.
        let v: Vec<f64> = (1..=50).map(f64::from).collect();
        assert_eq!(Summary::from_millis(&v).unwrap().p95, 48.0);
        // A single run is its own p95.
        assert_eq!(Summary::from_millis(&[7.0]).unwrap().p95, 7.0);
    }

    #[test]
    fn percentiles_of_unsorted_values() {
        let v: Vec<f64> = (1..=1000).rev().map(f64::from).collect();
        assert_eq!(percentile(&v, 99).unwrap(), 990.0);
        assert_eq!(
            percentile(&v, 95).unwrap(),
            Summary::from_millis(&v).unwrap().p95
        );
        assert_eq!(percentile(&v, 100).unwrap(), 1000.0);
        assert_eq!(percentile(&v, 0).unwrap(), 1.0);
        assert_eq!(percentile(&[5.0, 1.0], 50).unwrap(), 1.0);
        assert!(percentile(&[], 99).is_err());
        assert!(percentile(&[1.0], 101).is_err());
    }

    #[test]
    fn refuses_nothing() {
        assert!(Summary::from_millis(&[]).is_err());
        assert!(Summary::from_millis(&[f64::NAN]).is_err());
    }
}
