//! A kick that lands the moment a vCPU thread is registered must not end the process.
//!
//! Its own test binary, so its own process: no other test has installed the kick handler
//! before this one runs, which is exactly the situation of a VMM's first vCPU thread.

use std::sync::mpsc;

use drvisor::kick::Kicker;

#[test]
fn a_kick_right_after_registration_is_survived() {
    let kicker = std::sync::Arc::new(Kicker::default());
    let (registered, wait_registered) = mpsc::channel();
    let (kicked, wait_kicked) = mpsc::channel::<()>();
    let k = kicker.clone();
    let thread = std::thread::spawn(move || {
        k.register_current(0);
        registered.send(()).unwrap();
        // The thread has not entered any vCPU (no kvm_run registered): only the handler stands
        // between SIGRTMIN's default action and the process.
        wait_kicked.recv().unwrap();
        k.unregister(0);
    });
    wait_registered.recv().unwrap();
    kicker.kick(0);
    kicked.send(()).unwrap();
    thread.join().unwrap();
}
