//! The MC146818's alarm: at each update (once a second) the seconds, minutes and hours are
//! compared with the three alarm bytes, and a byte with its two top bits set (0xc0-0xff) is
//! "don't care": it matches every value. All three "don't care" fire every second. Pure: the
//! RTC decodes the bytes (BCD or binary, 12- or 24-hour) into an [`Alarm`] and asks it when it
//! fires next.

/// One alarm field: a value to match, or any value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// Matches every value ("don't care").
    Any,
    /// Matches this value only (out of range: never).
    Is(u32),
}

impl Field {
    /// The values of `0..limit` this field matches, ascending.
    fn values(self, limit: u32) -> impl Iterator<Item = u32> {
        let (from, to) = match self {
            Field::Any => (0, limit),
            Field::Is(v) if v < limit => (v, v + 1),
            Field::Is(_) => (0, 0),
        };
        from..to
    }
}

/// Whether an alarm byte is "don't care" (MC146818 data sheet: the two high bits set).
pub fn dont_care(byte: u8) -> bool {
    byte & 0xc0 == 0xc0
}

/// The alarm, decoded: hours (0-23), minutes, seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Alarm {
    /// 0-23.
    pub hour: Field,
    /// 0-59.
    pub minute: Field,
    /// 0-59.
    pub second: Field,
}

const DAY: i64 = 86_400;

impl Alarm {
    /// The first second after `after` (seconds since the epoch, the clock's time) at which the
    /// alarm fires, if it ever does.
    pub fn next_after(&self, after: i64) -> Option<i64> {
        let today = after.div_euclid(DAY) * DAY;
        // The hour and minute of `after`: earlier ones today cannot come after it.
        let now = (after - today) as u32;
        let (now_h, now_m) = (now / 3600, now / 60 % 60);
        // Every field combination recurs daily: today's or tomorrow's first one after `after`.
        for day in [today, today + DAY] {
            for h in self.hour.values(24) {
                if day == today && h < now_h {
                    continue;
                }
                for m in self.minute.values(60) {
                    if day == today && (h, m) < (now_h, now_m) {
                        continue;
                    }
                    for s in self.second.values(60) {
                        let t = day + i64::from(h * 3600 + m * 60 + s);
                        if t > after {
                            return Some(t);
                        }
                    }
                }
            }
        }
        None
    }

    /// Whether it fires at some second in `(from, to]`.
    pub fn fires_within(&self, from: i64, to: i64) -> bool {
        self.next_after(from).is_some_and(|t| t <= to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANY: Alarm = Alarm {
        hour: Field::Any,
        minute: Field::Any,
        second: Field::Any,
    };

    #[test]
    fn dont_care_is_the_two_high_bits() {
        assert!(dont_care(0xc0) && dont_care(0xff) && dont_care(0xd5));
        assert!(!dont_care(0x80) && !dont_care(0x40) && !dont_care(0x59));
    }

    #[test]
    fn all_dont_care_fires_every_second() {
        assert_eq!(ANY.next_after(1000), Some(1001));
        assert_eq!(ANY.next_after(DAY - 1), Some(DAY));
        assert!(ANY.fires_within(5, 6));
        assert!(!ANY.fires_within(5, 5), "an empty interval");
    }

    #[test]
    fn fixed_fields_fire_once_a_day_or_hour_or_minute() {
        let at = Alarm {
            hour: Field::Is(13),
            minute: Field::Is(7),
            second: Field::Is(9),
        };
        let t = 13 * 3600 + 7 * 60 + 9;
        assert_eq!(at.next_after(0), Some(t));
        assert_eq!(at.next_after(t), Some(t + DAY), "tomorrow, once passed");
        assert_eq!(at.next_after(t - 1), Some(t));
        let hourly = Alarm {
            hour: Field::Any,
            ..at
        };
        assert_eq!(hourly.next_after(t), Some(t + 3600));
        let minutely = Alarm {
            second: Field::Is(30),
            ..ANY
        };
        assert_eq!(minutely.next_after(DAY + 31), Some(DAY + 90));
        assert!(minutely.fires_within(DAY, DAY + 30));
        assert!(!minutely.fires_within(DAY + 30, DAY + 89));
    }

    #[test]
    fn an_impossible_value_never_fires() {
        let never = Alarm {
            second: Field::Is(60),
            ..ANY
        };
        assert_eq!(never.next_after(0), None);
        assert!(!never.fires_within(0, 10 * DAY));
    }

    #[test]
    fn the_answer_is_the_first_match_whatever_the_time_of_day() {
        // Against a second-by-second scan, at times all over a day, for patterns of each kind.
        let patterns = [
            ANY,
            Alarm {
                second: Field::Is(30),
                ..ANY
            },
            Alarm {
                hour: Field::Is(23),
                minute: Field::Is(59),
                second: Field::Any,
            },
            Alarm {
                hour: Field::Any,
                minute: Field::Is(0),
                second: Field::Is(0),
            },
            Alarm {
                hour: Field::Is(0),
                minute: Field::Any,
                second: Field::Is(59),
            },
        ];
        for alarm in patterns {
            for after in (5 * DAY..6 * DAY)
                .step_by(1_237)
                .chain([6 * DAY - 1, 5 * DAY])
            {
                let scan = (after + 1..after + 2 * DAY + 1).find(|&t| {
                    let (h, m, s) = (t % DAY / 3600, t % 3600 / 60, t % 60);
                    let hit = |f: Field, v: i64| match f {
                        Field::Any => true,
                        Field::Is(x) => i64::from(x) == v,
                    };
                    hit(alarm.hour, h) && hit(alarm.minute, m) && hit(alarm.second, s)
                });
                assert_eq!(alarm.next_after(after), scan, "{alarm:?} after {after}");
            }
        }
    }

    #[test]
    fn times_before_the_epoch_work_too() {
        assert_eq!(ANY.next_after(-1), Some(0));
        let noon = Alarm {
            hour: Field::Is(12),
            minute: Field::Is(0),
            second: Field::Is(0),
        };
        assert_eq!(noon.next_after(-DAY), Some(-DAY + 12 * 3600));
    }
}
