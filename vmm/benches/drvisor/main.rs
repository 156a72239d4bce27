//! `cargo bench -p drvisor`: drvisor's costs, as ratios measured in one run on one machine.
//!
//! Absolute times on an emulating host are noise (the platform notes); the ratios are the result.
//! This is a measurement, not a test: it asserts nothing about speed.

mod baseline;
mod breakdown;
mod debug;
mod hits;
mod measure;
mod watch;

fn main() {
    // `cargo test --benches` runs bench targets without `--bench`; measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let kvm = kvm_ioctls::Kvm::new().expect("the benchmarks need /dev/kvm");
    let base = baseline::run(&kvm);
    debug::run(&kvm, &base);
    breakdown::run(&kvm);
    hits::run();
    watch::run(&base);
}
