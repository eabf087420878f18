//! The huge-page fraction seen from above one bdev: combined over several
//! (the children of a striped bdev, the devices of a bench run), and the
//! fix to tell a user when it is below 1.

use crate::BdevRef;

use super::mapping::HUGE_PAGE_SIZE;

/// The huge-page fraction of `bdevs` together: each bdev's
/// [`huge_page_fraction`](crate::Bdev::huge_page_fraction) weighted by its size,
/// over the bdevs that report one. `None` when none does.
///
/// Reads `/proc/self/smaps` once per RAM bdev: a control-path call.
pub fn combined_huge_page_fraction<'a>(
    bdevs: impl IntoIterator<Item = &'a BdevRef>,
) -> Option<f64> {
    combine(
        bdevs
            .into_iter()
            .map(|b| (b.huge_page_fraction(), b.geometry().size_bytes())),
    )
}

/// Size-weighted mean of the `(fraction, bytes)` pairs that have a fraction.
fn combine(parts: impl Iterator<Item = (Option<f64>, u64)>) -> Option<f64> {
    let (huge, total) = parts
        .filter_map(|(fraction, bytes)| fraction.map(|f| (f, bytes as f64)))
        .fold((0.0, 0.0), |(huge, total), (f, bytes)| {
            (huge + f * bytes, total + bytes)
        });
    (total > 0.0).then(|| (huge / total).clamp(0.0, 1.0))
}

/// Huge pages needed to back `bytes` of memory entirely.
pub fn huge_pages_for(bytes: u64) -> u64 {
    bytes.div_ceil(HUGE_PAGE_SIZE as u64)
}

/// What to do when memory that should be on huge pages is not: reserve
/// hugetlbfs pages for all `bytes` of it (a RAM bdev then gets them,
/// guaranteed) or compact memory so that transparent huge pages can be had,
/// then start again. One sentence, without a final full stop.
pub fn huge_page_remedy(bytes: u64) -> String {
    format!(
        "reserve huge pages (`sysctl vm.nr_hugepages={}` for {}, more if other \
         programs use huge pages) or compact memory \
         (`echo 1 > /proc/sys/vm/compact_memory`) and retry",
        huge_pages_for(bytes),
        human_bytes(bytes)
    )
}

/// A huge-page fraction as a percentage with one decimal, rounded down so
/// that only a whole 1.0 shows as `100.0%`.
pub fn huge_page_percent(fraction: f64) -> String {
    format!("{:.1}%", (fraction * 1000.0).floor() / 10.0)
}

/// `bytes` as MiB or GiB, one decimal where it is not whole.
fn human_bytes(bytes: u64) -> String {
    let (value, unit) = if bytes >= 1 << 30 {
        (bytes as f64 / (1u64 << 30) as f64, "GiB")
    } else {
        (bytes as f64 / (1u64 << 20) as f64, "MiB")
    };
    if value.fract() == 0.0 {
        format!("{value:.0} {unit}")
    } else {
        format!("{value:.1} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_fraction_is_weighted_by_size() {
        assert_eq!(
            combine([(Some(1.0), 3 << 20), (Some(0.0), 1 << 20)].into_iter()),
            Some(0.75)
        );
        // Bdevs without memory of their own do not count.
        assert_eq!(
            combine([(None, 1 << 30), (Some(0.5), 2 << 20)].into_iter()),
            Some(0.5)
        );
        assert_eq!(combine([(None, 1 << 30)].into_iter()), None);
        assert_eq!(combine(std::iter::empty()), None);
    }

    #[test]
    fn percentages_round_down() {
        assert_eq!(huge_page_percent(1.0), "100.0%");
        assert_eq!(huge_page_percent(0.99999), "99.9%");
        assert_eq!(huge_page_percent(0.375), "37.5%");
        assert_eq!(huge_page_percent(0.0), "0.0%");
    }

    #[test]
    fn remedy_names_the_pages_needed() {
        assert_eq!(huge_pages_for(1 << 30), 512);
        assert_eq!(huge_pages_for((1 << 30) + 1), 513);
        assert_eq!(
            huge_page_remedy(1 << 30),
            "reserve huge pages (`sysctl vm.nr_hugepages=512` for 1 GiB, more if other \
             programs use huge pages) or compact memory (`echo 1 > /proc/sys/vm/compact_memory`) \
             and retry"
        );
        assert!(huge_page_remedy(3 << 29).contains("nr_hugepages=768` for 1.5 GiB"));
        assert!(huge_page_remedy(64 << 20).contains("nr_hugepages=32` for 64 MiB"));
    }
}
