//! `device_stats!`: the statistics of a frontend device.
//!
//! A device counts into a plain snapshot struct during a poll and publishes
//! it once at the end of the poll into relaxed atomics that other threads
//! (the statistics thread of `serve`) read with `snapshot()`. Only the
//! device's reactor thread writes, so publishing is a relaxed load and
//! store per changed counter, never a locked read-modify-write.

/// Declares a device's statistics: the atomics (`$stats`, owned by the
/// device and shared through an `Arc`) and the snapshot (`$snapshot`, plain
/// `u64` fields of the same names, each with its doc).
///
/// - `counters` are totals since the device was created: publishing adds
///   the poll's value.
/// - `gauges` (optional) are values as of the last poll: publishing stores
///   the poll's value.
///
/// Generates `$stats::snapshot(&self) -> $snapshot` (relaxed loads; not an
/// atomic snapshot of all fields) and `$stats::publish(&self, &$snapshot)`
/// (crate-visible; called only by the device's own thread).
///
/// ```text
/// device_stats! {
///     /// Device counters.
///     pub struct MyStats;
///     /// A copy of [`MyStats`].
///     pub struct MyStatsSnapshot;
///     counters {
///         /// Commands received.
///         commands,
///     }
///     gauges {
///         /// Commands in the executor.
///         executing,
///     }
/// }
/// ```
macro_rules! device_stats {
    (
        $(#[$stats_doc:meta])*
        $vis:vis struct $stats:ident;
        $(#[$snapshot_doc:meta])*
        $snapshot_vis:vis struct $snapshot:ident;
        counters { $( $(#[$cdoc:meta])* $counter:ident, )* }
        $( gauges { $( $(#[$gdoc:meta])* $gauge:ident, )* } )?
    ) => {
        $(#[$stats_doc])*
        #[derive(Debug, Default)]
        $vis struct $stats {
            $( $counter: ::std::sync::atomic::AtomicU64, )*
            $( $( $gauge: ::std::sync::atomic::AtomicU64, )* )?
        }

        $(#[$snapshot_doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        $snapshot_vis struct $snapshot {
            $( $(#[$cdoc])* pub $counter: u64, )*
            $( $( $(#[$gdoc])* pub $gauge: u64, )* )?
        }

        impl $stats {
            /// Reads every value (relaxed; not an atomic snapshot of all).
            pub fn snapshot(&self) -> $snapshot {
                use ::std::sync::atomic::Ordering::Relaxed;
                $snapshot {
                    $( $counter: self.$counter.load(Relaxed), )*
                    $( $( $gauge: self.$gauge.load(Relaxed), )* )?
                }
            }

            /// Adds a poll's counters and stores its gauges. Only the
            /// device's own thread writes, so a plain load and store
            /// suffice (no locked read-modify-write per counter).
            pub(crate) fn publish(&self, poll: &$snapshot) {
                use ::std::sync::atomic::Ordering::Relaxed;
                $(
                    if poll.$counter != 0 {
                        let a = &self.$counter;
                        a.store(a.load(Relaxed) + poll.$counter, Relaxed);
                    }
                )*
                $( $( self.$gauge.store(poll.$gauge, Relaxed); )* )?
            }
        }
    };
}

pub(crate) use device_stats;

#[cfg(test)]
mod tests {
    device_stats! {
        /// Test counters.
        struct Stats;
        /// A copy of [`Stats`].
        struct Snapshot;
        counters {
            /// A counter.
            total,
            /// Another.
            other,
        }
        gauges {
            /// A gauge.
            level,
        }
    }

    device_stats! {
        /// Counters only.
        struct Counters;
        /// A copy of [`Counters`].
        struct CountersSnapshot;
        counters {
            /// A counter.
            total,
        }
    }

    #[test]
    fn counters_add_and_gauges_store() {
        let s = Stats::default();
        s.publish(&Snapshot {
            total: 2,
            other: 0,
            level: 7,
        });
        s.publish(&Snapshot {
            total: 3,
            other: 1,
            level: 4,
        });
        assert_eq!(
            s.snapshot(),
            Snapshot {
                total: 5,
                other: 1,
                level: 4
            }
        );
    }

    #[test]
    fn gauges_are_optional() {
        let s = Counters::default();
        s.publish(&CountersSnapshot { total: 2 });
        s.publish(&CountersSnapshot { total: 3 });
        assert_eq!(s.snapshot(), CountersSnapshot { total: 5 });
    }
}
