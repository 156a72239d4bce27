//! `cargo bench -p drvisor`: drvisor's costs, as ratios measured in one run on one machine.
//!
//! Absolute times on an emulating host are noise (the platform notes); the ratios are the result.
//! This is a measurement, not a test: it asserts nothing about speed.
//!
//! `cargo bench -p drvisor -- NAME` runs only the groups whose name contains NAME (`debug`,
//! `breakdown`, `hits`, `watch`, `rest`, `streams`, `conditions`, `startup`); the exit baselines always run, since every ratio
//! divides by them.

mod baseline;
mod breakdown;
mod conditions;
mod debug;
mod hits;
mod measure;
mod rest;
mod startup;
mod streams;
mod watch;

fn main() {
    // `cargo test --benches` runs bench targets without `--bench`; measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |group: &str| filter.as_deref().is_none_or(|f| group.contains(f));
    let kvm = kvm_ioctls::Kvm::new().expect("the benchmarks need /dev/kvm");
    let base = baseline::run(&kvm);
    if wanted("debug") {
        debug::run(&kvm, &base);
    }
    if wanted("breakdown") {
        breakdown::run(&kvm);
    }
    if wanted("hits") {
        hits::run();
    }
    if wanted("watch") {
        watch::run(&base);
    }
    if wanted("rest") {
        rest::run(&base);
    }
    if wanted("streams") {
        streams::run();
    }
    if wanted("conditions") {
        conditions::run(&base);
    }
    if wanted("startup") {
        startup::run();
    }
}
