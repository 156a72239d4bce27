//! The main thread's event loop (event-manager): guest console input, and the end of the run.

use std::sync::{Arc, Mutex};

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

/// The subscribers the loop owns. Each is shared with another owner (vCPU threads, the VM), so
/// the manager holds them as `Arc<Mutex<dyn MutEventSubscriber + Send>>`.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// Waits on the run's `done_evt`; when it fires, the loop ends.
pub struct Shutdown {
    evt: EventFd,
    fired: bool,
}

impl Shutdown {
    /// A subscriber on `evt`.
    pub fn new(evt: EventFd) -> Self {
        Shutdown { evt, fired: false }
    }
}

impl MutEventSubscriber for Shutdown {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.evt, EventSet::IN)) {
            tracing::error!("cannot watch the shutdown event: {e:?}");
            self.fired = true;
        }
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.evt.read();
        self.fired = true;
    }
}

/// Runs the loop with `subscribers` until `done_evt` is written.
pub fn run_until_done(done_evt: EventFd, subscribers: Vec<Subscriber>) -> std::io::Result<()> {
    let mut manager: EventManager<Subscriber> =
        EventManager::new().map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    let shutdown = Arc::new(Mutex::new(Shutdown::new(done_evt)));
    manager.add_subscriber(shutdown.clone());
    for s in subscribers {
        manager.add_subscriber(s);
    }
    while !shutdown.lock().unwrap_or_else(|e| e.into_inner()).fired {
        manager
            .run()
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    }
    Ok(())
}
