//! A value made on a thread of its own while the run starts, such as a kernel's symbols, which
//! a bzImage gives only once its payload is decompressed (seconds on a slow host). The first
//! reader waits for it; a run that never reads it never waits.

use std::sync::LazyLock;

/// The value, or the thread making it.
pub struct Deferred<T>(LazyLock<T, Box<dyn FnOnce() -> T + Send>>);

impl<T: Send + 'static> Deferred<T> {
    /// A value that is already there.
    pub fn ready(value: T) -> Self {
        Deferred(LazyLock::new(Box::new(move || value)))
    }

    /// Starts `make` on a thread named `name`. A panic there is re-raised in the first reader.
    pub fn spawn(name: &str, make: impl FnOnce() -> T + Send + 'static) -> std::io::Result<Self> {
        let worker = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(make)?;
        Ok(Deferred(LazyLock::new(Box::new(move || {
            worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }))))
    }

    /// The value, waiting for its thread the first time.
    pub fn get(&self) -> &T {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_ready_value_is_there() {
        assert_eq!(*Deferred::ready(7).get(), 7);
    }

    #[test]
    fn the_first_reader_waits_and_every_reader_sees_the_one_value() {
        let (go, wait) = mpsc::channel::<()>();
        let d = std::sync::Arc::new(
            Deferred::spawn("test-deferred", move || {
                wait.recv().expect("the test says go");
                vec![1, 2, 3]
            })
            .expect("thread"),
        );
        let reader = {
            let d = d.clone();
            std::thread::spawn(move || d.get().clone())
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(!reader.is_finished(), "read before the value was made");
        go.send(()).expect("worker waits");
        assert_eq!(reader.join().expect("reader"), [1, 2, 3]);
        assert_eq!(d.get(), &[1, 2, 3]);
    }
}
