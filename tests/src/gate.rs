//! A gate a loader waits at until the test opens it: a window held open by the test, not by a
//! sleep.

use tokio::sync::watch;

/// Closed until [`Gate::open`]; every [`Gate::passed`] then returns, now and later.
#[derive(Clone, Debug)]
pub struct Gate(watch::Sender<bool>);

impl Gate {
    /// A closed gate.
    pub fn new() -> Gate {
        Gate(watch::Sender::new(false))
    }

    /// Opens it for good.
    pub fn open(&self) {
        self.0.send_replace(true);
    }

    /// Waits until it is open.
    pub async fn passed(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

impl Default for Gate {
    fn default() -> Gate {
        Gate::new()
    }
}
