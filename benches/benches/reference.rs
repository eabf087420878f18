//! The reference loop of the RAM-bdev target: copy 4 KiB from a random
//! 4 KiB-aligned offset of a 1 GiB buffer into the next slot of an 8 MiB ring,
//! on one core. `dataplane bench --reference` runs the same loop
//! (`bench::reference`) in the same process as the dataplane and
//! reports the ratio; this benchmark lets anyone measure the loop alone.

use bench::reference::{ReferenceBuffers, ReferenceConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn reference(c: &mut Criterion) {
    let mut buffers = ReferenceBuffers::new(ReferenceConfig::default());
    let mut group = c.benchmark_group("reference");
    group.throughput(Throughput::Elements(1024));
    group.bench_function("copy_4k_random_from_1g_into_8m_ring", |b| {
        b.iter(|| buffers.copy_n(1024))
    });
    group.finish();
}

criterion_group!(benches, reference);
criterion_main!(benches);
