//! Alerts the statement path raises besides refusals (which are alerts
//! themselves): privileged use outside working hours, once per grant and
//! replica. Each is an audit event of severity `alert` (kind `alert.*`),
//! which webhooks deliver as `alert.*`. (Many refused attempts by one user in
//! a short time are counted in the store, across replicas: `audit.rs`.)

use chrono::{Datelike, Timelike};
use config::Gateway;
use policy::Time;
use std::collections::HashSet;
use std::sync::Mutex;

pub struct Alerts {
    hours: Option<(u32, u32)>,
    days: Vec<String>,
    off_hours_grants: Mutex<HashSet<i64>>,
}

impl Alerts {
    pub fn new(g: &Gateway) -> Alerts {
        Alerts {
            hours: g.working_hours.as_deref().and_then(config::parse_hours),
            days: g.working_days.clone(),
            off_hours_grants: Mutex::new(HashSet::new()),
        }
    }

    /// Whether `t` is outside the configured working hours (never, if none).
    pub fn outside_hours(&self, t: Time) -> bool {
        let Some((start, end)) = self.hours else {
            return false;
        };
        let day = config::WEEKDAYS[t.weekday().num_days_from_monday() as usize];
        let minute = t.hour() * 60 + t.minute();
        !self.days.iter().any(|d| d == day) || minute < start || minute >= end
    }

    /// True the first time grant `id` is used outside working hours.
    pub fn off_hours_use(&self, grant: i64, t: Time) -> bool {
        self.outside_hours(t) && self.off_hours_grants.lock().unwrap().insert(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn gateway(extra: &str) -> Gateway {
        config::Config::from_toml(&format!("[gateway]\n{extra}\n"))
            .unwrap()
            .gateway
    }

    #[test]
    fn working_hours_and_days() {
        let a = Alerts::new(&gateway("working_hours = \"08:00-18:00\""));
        // 2026-11-30 is a Monday.
        let at = |d, h, m| chrono::Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap();
        assert!(!a.outside_hours(at(30, 9, 0)));
        assert!(a.outside_hours(at(30, 7, 59)));
        assert!(a.outside_hours(at(30, 18, 0)));
        assert!(a.outside_hours(at(29, 12, 0)), "Sunday");
        assert!(a.off_hours_use(7, at(29, 12, 0)));
        assert!(!a.off_hours_use(7, at(29, 12, 5)), "once per grant");
        let none = Alerts::new(&gateway(""));
        assert!(!none.outside_hours(at(29, 3, 0)));
    }
}
