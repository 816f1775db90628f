//! Time as an input. Production uses [`SystemClock`]; tests move a [`ManualClock`].

use std::sync::Mutex;

pub type Time = chrono::DateTime<chrono::Utc>;

pub trait Clock: Send + Sync {
    fn now(&self) -> Time;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Time {
        chrono::Utc::now()
    }
}

/// A clock that only moves when told to.
pub struct ManualClock(Mutex<Time>);

impl ManualClock {
    pub fn new(start: Time) -> ManualClock {
        ManualClock(Mutex::new(start))
    }

    pub fn advance(&self, by: chrono::Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Time {
        *self.0.lock().unwrap()
    }
}
