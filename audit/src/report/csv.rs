//! The CSV format: the whole report as ONE table, so a spreadsheet or a script can
//! take it in one read. Every row has the same eight columns:
//!
//! `section,key,side,subject,object,time,detail,count`
//!
//! `section` says what the row is, and which other columns it fills:
//!
//! | section | key | side | subject | object | time | detail | count |
//! |---|---|---|---|---|---|---|---|
//! | `report` | `since`, `until`, `generated_at` | | | | the time | | |
//! | `report` | `database`, `head_hash` | | | | | the value | |
//! | `report` | `head_seq` | | | | | | the seq |
//! | `chain` | `intact` or `broken` | | sender of the broken record | its record id | | `seq N: problem` | records checked |
//! | `records` | kind (`decision`, …) | | | | | | records |
//! | `requests` | `distinct` | | | | | | request ids |
//! | `decisions` | effect | side | | | | | decisions |
//! | `denials_by_edge` | effect | side | principal | resource | | | decisions |
//! | `denials_by_policy` | effect | side | policy `@id` | | | `default deny` when none | decisions |
//! | `dual_approval` | `ingress_allowed`, `both_allowed`, `missing_egress`, `egress_allowed_ingress_denied` | | | | | | request ids |
//! | `dual_approval` | `coverage_percent` | | | | | percentage or `n/a` | |
//! | `missing_egress_example` | | | request id | | | | |
//! | `one_side_denied` | | | principal | resource | | | request ids |
//! | `external_totals` | kind | | | | | | events |
//! | `external` | kind | | workload | `host:port` | | | events |
//! | `identity_totals` | kind | | | | | | events |
//! | `identity_event` | kind | | SPIFFE ID | serial | time | reason | |
//! | `policy_totals` | `accepted`, `rejected` | | | | | | events |
//! | `policy_accepted` | version | | | | time | digest | |
//! | `policy_rejected` | | | | | time | first line of the diagnostics | |
//! | `timeline` | effect | | | | bucket start | | decisions |
//!
//! Lines end with `\n`. A cell is quoted when it holds a comma, a quote or a line
//! break, quotes doubled; a cell starting with `=`, `+`, `-`, `@`, a tab or a
//! carriage return gets a leading `'` so no spreadsheet runs it as a formula.

use crate::record::{Effect, Side};

use super::model::{Report, Timestamp};
use super::text::{host_port, percent, printable};

/// The header line.
pub const HEADER: &str = "section,key,side,subject,object,time,detail,count";

/// The columns of one row after `section`; empty ones print as empty cells.
#[derive(Debug, Default)]
struct Row<'a> {
    key: &'a str,
    side: Option<Side>,
    subject: &'a str,
    object: &'a str,
    time: Option<Timestamp>,
    detail: &'a str,
    count: Option<u64>,
}

impl Report {
    /// The report as one CSV table (columns in the [module documentation](self)).
    pub fn to_csv(&self) -> String {
        let mut csv = Csv(format!("{HEADER}\n"));
        self.csv_meta(&mut csv);
        self.csv_totals(&mut csv);
        self.csv_denials(&mut csv);
        self.csv_dual_approval(&mut csv);
        self.csv_external(&mut csv);
        self.csv_identity(&mut csv);
        self.csv_policy(&mut csv);
        for bucket in &self.timeline.buckets {
            for (effect, count) in [
                (Effect::Allow, bucket.allow),
                (Effect::Deny, bucket.deny),
                (Effect::DryRunDeny, bucket.dry_run_deny),
            ] {
                let row = Row {
                    key: effect.as_str(),
                    time: Some(bucket.start),
                    count: Some(count),
                    ..Row::default()
                };
                csv.row("timeline", &row);
            }
        }
        csv.0
    }

    fn csv_meta(&self, csv: &mut Csv) {
        for (key, time) in [
            ("since", self.since),
            ("until", self.until),
            ("generated_at", self.generated_at),
        ] {
            csv.row(
                "report",
                &Row {
                    key,
                    time: Some(time),
                    ..Row::default()
                },
            );
        }
        csv.row(
            "report",
            &Row {
                key: "database",
                detail: &self.database,
                ..Row::default()
            },
        );
        if let Some(head) = &self.head {
            csv.row(
                "report",
                &Row {
                    key: "head_seq",
                    count: Some(head.seq),
                    ..Row::default()
                },
            );
            csv.row(
                "report",
                &Row {
                    key: "head_hash",
                    detail: &head.hash,
                    ..Row::default()
                },
            );
        }
        self.csv_chain(csv);
    }

    fn csv_chain(&self, csv: &mut Csv) {
        let checked = Some(self.chain.records);
        match &self.chain.broken {
            None => csv.row(
                "chain",
                &Row {
                    key: "intact",
                    count: checked,
                    ..Row::default()
                },
            ),
            Some(broken) => csv.row(
                "chain",
                &Row {
                    key: "broken",
                    subject: &broken.sender,
                    object: &broken.record_id,
                    detail: &format!("seq {}: {}", broken.seq, broken.problem),
                    count: checked,
                    ..Row::default()
                },
            ),
        }
    }

    fn csv_totals(&self, csv: &mut Csv) {
        for (kind, count) in &self.totals.by_kind {
            csv.row(
                "records",
                &Row {
                    key: kind.as_str(),
                    count: Some(*count),
                    ..Row::default()
                },
            );
        }
        csv.row(
            "requests",
            &Row {
                key: "distinct",
                count: Some(self.totals.requests),
                ..Row::default()
            },
        );
        for (side, by_effect) in &self.totals.decisions {
            for (effect, count) in by_effect {
                let row = Row {
                    key: effect.as_str(),
                    side: Some(*side),
                    count: Some(*count),
                    ..Row::default()
                };
                csv.row("decisions", &row);
            }
        }
    }

    fn csv_denials(&self, csv: &mut Csv) {
        for edge in &self.denials.by_edge {
            let row = Row {
                key: edge.effect.as_str(),
                side: Some(edge.side),
                subject: &edge.principal,
                object: &edge.resource,
                count: Some(edge.count),
                ..Row::default()
            };
            csv.row("denials_by_edge", &row);
        }
        for policy in &self.denials.by_policy {
            let row = Row {
                key: policy.effect.as_str(),
                side: Some(policy.side),
                subject: if policy.default_deny { "" } else { &policy.policy },
                detail: if policy.default_deny { "default deny" } else { "" },
                count: Some(policy.count),
                ..Row::default()
            };
            csv.row("denials_by_policy", &row);
        }
    }

    fn csv_dual_approval(&self, csv: &mut Csv) {
        let dual = &self.dual_approval;
        for (key, count) in [
            ("ingress_allowed", dual.ingress_allowed),
            ("both_allowed", dual.both_allowed),
            ("missing_egress", dual.missing_egress()),
            ("egress_allowed_ingress_denied", dual.egress_allowed_ingress_denied),
        ] {
            csv.row(
                "dual_approval",
                &Row {
                    key,
                    count: Some(count),
                    ..Row::default()
                },
            );
        }
        let coverage = percent(dual.coverage_percent);
        csv.row(
            "dual_approval",
            &Row {
                key: "coverage_percent",
                detail: &coverage,
                ..Row::default()
            },
        );
        for id in &dual.missing_egress_examples {
            csv.row(
                "missing_egress_example",
                &Row {
                    subject: id,
                    ..Row::default()
                },
            );
        }
        for edge in &dual.one_side_denied {
            let row = Row {
                subject: &edge.principal,
                object: &edge.resource,
                count: Some(edge.requests),
                ..Row::default()
            };
            csv.row("one_side_denied", &row);
        }
    }

    fn csv_external(&self, csv: &mut Csv) {
        for (kind, count) in &self.totals.external {
            csv.row(
                "external_totals",
                &Row {
                    key: kind.as_str(),
                    count: Some(*count),
                    ..Row::default()
                },
            );
        }
        for row in &self.external.rows {
            let destination = host_port(&row.host, row.port);
            let csv_row = Row {
                key: row.kind.as_str(),
                subject: &row.workload,
                object: &destination,
                count: Some(row.count),
                ..Row::default()
            };
            csv.row("external", &csv_row);
        }
    }

    fn csv_identity(&self, csv: &mut Csv) {
        for (kind, count) in &self.identity.by_kind {
            csv.row(
                "identity_totals",
                &Row {
                    key: kind.as_str(),
                    count: Some(*count),
                    ..Row::default()
                },
            );
        }
        for event in &self.identity.recent {
            let row = Row {
                key: event.kind.as_str(),
                subject: &event.spiffe_id,
                object: &event.serial,
                time: Some(event.time),
                detail: &event.reason,
                ..Row::default()
            };
            csv.row("identity_event", &row);
        }
    }

    fn csv_policy(&self, csv: &mut Csv) {
        let policy = &self.policy;
        for (key, count) in [("accepted", policy.accepted_total), ("rejected", policy.rejected_total)] {
            csv.row(
                "policy_totals",
                &Row {
                    key,
                    count: Some(count),
                    ..Row::default()
                },
            );
        }
        for accepted in &policy.accepted {
            let version = accepted.version.to_string();
            let row = Row {
                key: &version,
                time: Some(accepted.time),
                detail: &accepted.digest,
                ..Row::default()
            };
            csv.row("policy_accepted", &row);
        }
        for rejected in &policy.rejected {
            csv.row(
                "policy_rejected",
                &Row {
                    time: Some(rejected.time),
                    detail: &rejected.detail,
                    ..Row::default()
                },
            );
        }
    }
}

/// The CSV being written.
struct Csv(String);

impl Csv {
    fn row(&mut self, section: &str, row: &Row<'_>) {
        let side = row.side.map(Side::as_str).unwrap_or("");
        let time = row.time.map(|t| t.to_string()).unwrap_or_default();
        let count = row.count.map(|n| n.to_string()).unwrap_or_default();
        let cells = [
            section,
            row.key,
            side,
            row.subject,
            row.object,
            &time,
            row.detail,
            &count,
        ];
        for (i, text) in cells.into_iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            push_cell(&mut self.0, text);
        }
        self.0.push('\n');
    }
}

/// One cell, safe for spreadsheets and quoted as RFC 4180 says.
pub(crate) fn push_cell(out: &mut String, text: &str) {
    let text: String = text.chars().map(printable).collect();
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quoted = text.contains([',', '"', '\n', '\r']);
    if quoted {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    out.push_str(&text.replace('"', "\"\""));
    if quoted {
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::push_cell;

    fn cell(text: &str) -> String {
        let mut out = String::new();
        push_cell(&mut out, text);
        out
    }

    #[test]
    fn formulas_are_defused_and_quotes_doubled() {
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("+1"), "'+1");
        assert_eq!(cell("-1"), "'-1");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("\tx"), "'\tx");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("nul\0"), "nul\u{fffd}");
    }
}
