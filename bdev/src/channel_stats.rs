//! `channel_stats!`: the statistics of a bdev, counted per channel.
//!
//! A bdev's statistics are a plain `Copy` struct of `pub u64` fields. Each
//! channel counts into its own copy in plain integers and, once per poll,
//! publishes its current totals with one relaxed store per field into its
//! own `ChannelCounters` (one `AtomicU64` per field). Only the channel's
//! thread writes, so publishing is never a locked read-modify-write: the
//! data path pays one relaxed store per field per poll. Readers (the bdev's
//! `stats()`, on the control path) `load` each channel's counters with
//! relaxed loads (not an atomic snapshot of all fields) and `sum` them over
//! every channel, closed ones included.

/// Declares a bdev's statistics: the snapshot (`$stats`, plain `u64` fields,
/// each with its doc) and one channel's published copy (`$counters`, one
/// `AtomicU64` per field, shared through an `Arc`).
///
/// - `summed` fields are added over the channels.
/// - `last_nonzero` fields (optional) take the last channel's value that is
///   not 0 (0 if none): a "last seen" value rather than a count.
///
/// Generates `$counters::publish(&self, &$stats)` (relaxed stores; called
/// only by the channel's own thread), `$counters::load(&self) -> $stats`
/// (relaxed loads) and `$stats::sum(channels) -> $stats`, all with the
/// visibility of `$counters`.
///
/// ```text
/// channel_stats! {
///     /// What the channels did.
///     pub struct MyStats;
///     /// One channel's published counters.
///     pub(super) struct ChannelCounters;
///     summed {
///         /// Requests completed.
///         completed,
///     }
///     last_nonzero {
///         /// The last error status, 0 if none.
///         last_status,
///     }
/// }
/// ```
macro_rules! channel_stats {
    (
        $(#[$stats_doc:meta])*
        $stats_vis:vis struct $stats:ident;
        $(#[$counters_doc:meta])*
        $vis:vis struct $counters:ident;
        summed { $( $(#[$sdoc:meta])* $summed:ident, )* }
        $( last_nonzero { $( $(#[$ldoc:meta])* $last:ident, )* } )?
    ) => {
        $(#[$stats_doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        $stats_vis struct $stats {
            $( $(#[$sdoc])* pub $summed: u64, )*
            $( $( $(#[$ldoc])* pub $last: u64, )* )?
        }

        impl $stats {
            /// The sum of several channels' counters.
            $vis fn sum<'a>(channels: impl IntoIterator<Item = &'a $counters>) -> Self {
                let mut total = Self::default();
                for channel in channels {
                    let one = channel.load();
                    $( total.$summed += one.$summed; )*
                    $( $(
                        if one.$last != 0 {
                            total.$last = one.$last;
                        }
                    )* )?
                }
                total
            }
        }

        $(#[$counters_doc])*
        #[derive(Debug, Default)]
        $vis struct $counters {
            $( $summed: ::std::sync::atomic::AtomicU64, )*
            $( $( $last: ::std::sync::atomic::AtomicU64, )* )?
        }

        impl $counters {
            /// Publishes the channel's current totals (relaxed: a reader
            /// sees each counter at some recent value). Only the channel's
            /// own thread calls it: a plain store per field.
            #[inline]
            $vis fn publish(&self, stats: &$stats) {
                use ::std::sync::atomic::Ordering::Relaxed;
                $( self.$summed.store(stats.$summed, Relaxed); )*
                $( $( self.$last.store(stats.$last, Relaxed); )* )?
            }

            /// Reads every counter (relaxed; not an atomic snapshot of all).
            $vis fn load(&self) -> $stats {
                use ::std::sync::atomic::Ordering::Relaxed;
                $stats {
                    $( $summed: self.$summed.load(Relaxed), )*
                    $( $( $last: self.$last.load(Relaxed), )* )?
                }
            }
        }
    };
}

pub(crate) use channel_stats;

#[cfg(test)]
mod tests {
    channel_stats! {
        /// Test statistics.
        struct Stats;
        /// A channel's copy of [`Stats`].
        struct Counters;
        summed {
            /// A count.
            total,
            /// Another.
            other,
        }
        last_nonzero {
            /// A last-seen value.
            last,
        }
    }

    channel_stats! {
        /// Summed fields only.
        struct Plain;
        /// A channel's copy of [`Plain`].
        struct PlainCounters;
        summed {
            /// A count.
            total,
        }
    }

    #[test]
    fn publish_load_and_sum() {
        let a = Counters::default();
        let b = Counters::default();
        let c = Counters::default();
        let one = Stats {
            total: 2,
            other: 1,
            last: 7,
        };
        a.publish(&Stats { total: 1, ..one });
        // A later publish replaces (the channel publishes totals).
        a.publish(&one);
        b.publish(&Stats {
            total: 3,
            other: 0,
            last: 9,
        });
        c.publish(&Stats {
            total: 5,
            other: 4,
            last: 0,
        });
        assert_eq!(a.load(), one);
        assert_eq!(
            Stats::sum([&a, &b, &c]),
            Stats {
                total: 10,
                other: 5,
                last: 9
            }
        );
        assert_eq!(Stats::sum([]), Stats::default());
    }

    #[test]
    fn last_nonzero_is_optional() {
        let a = PlainCounters::default();
        let b = PlainCounters::default();
        a.publish(&Plain { total: 2 });
        b.publish(&Plain { total: 3 });
        assert_eq!(Plain::sum([&a, &b]), Plain { total: 5 });
    }
}
