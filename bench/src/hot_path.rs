//! The KMS hot-path targets (T1), judged on the rows of the KMS matrix: the plugin's
//! Decrypt cache hit against its own Status and against the floor's Decrypt (a bare tonic
//! server answering constants, [`super::floor`]), and Encrypt against the cache hit. Pure:
//! figures in, targets and reference ratios out.
//!
//! | id   | judged at                       | target                                                        |
//! |------|---------------------------------|---------------------------------------------------------------|
//! | T1.1 | fewer than 64 clients           | hit p50 ≤ 1.3 × Status p50, hit throughput ≥ 80 % of Status's |
//! | T1.2 | 64 clients or more              | hit throughput ≥ 85 % of Status's (the floor's ratio beside)  |
//! | T1.3 | 64 clients or more, with floor  | hit throughput ≥ 0.85 × the floor's Decrypt                   |
//! | T1.4 | 1 client                        | Encrypt p50 ≤ 2 × hit p50, 0 Key Vault calls per Encrypt      |
//!
//! Each is judged in every cell of the matrix (concurrency, latency) it applies to; its id
//! names the cell when that is not the nominal one: `T1.2@20ms`, `T1.1@8c`, `T1.1@8c/20ms`.
//! Throughputs are successful calls per second of wall time.

use super::report::{Reference, Row, Target, group_thousands};

/// Targets stated "at 64 clients" are judged at every concurrency of at least this.
pub const LOADED_CLIENTS: usize = 64;
/// T1.1: hit p50 / Status p50 at most this.
pub const HIT_P50_LIMIT: f64 = 1.3;
/// T1.1: hit throughput / Status throughput at least this.
pub const HIT_OPS_FEW: f64 = 0.80;
/// T1.2: hit throughput / Status throughput at least this.
pub const HIT_OPS_LOADED: f64 = 0.85;
/// T1.3: hit throughput / the floor's Decrypt throughput at least this.
pub const HIT_VS_FLOOR: f64 = 0.85;
/// T1.4: Encrypt p50 / hit p50 at most this.
pub const ENCRYPT_P50_LIMIT: f64 = 2.0;
/// T1.4: all vault requests of the Encrypt run per Encrypt below this. The plugin's key
/// poll (one key read a minute) may fall in the run; a call made per Encrypt is at least
/// one per Encrypt.
pub const ENCRYPT_KV_PER_OP: f64 = 0.05;

/// The floor's rows of one cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloorRows {
    /// Index of the floor's Status row.
    pub status: usize,
    /// Index of the floor's Decrypt row.
    pub decrypt: usize,
}

/// One cell of the matrix (a concurrency and a latency): indices of its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// Concurrent clients.
    pub concurrency: usize,
    /// Latency added to vault requests.
    pub latency_ms: u64,
    /// The plugin's Status row.
    pub status: usize,
    /// The plugin's Decrypt cache-hit row.
    pub hit: usize,
    /// The plugin's Encrypt row.
    pub encrypt: usize,
    /// The floor's rows, when it ran in this cell.
    pub floor: Option<FloorRows>,
}

/// A target and the rows it was judged on.
#[derive(Debug, Clone)]
pub struct Judged {
    /// The target.
    pub target: Target,
    /// Indices of its rows.
    pub rows: Vec<usize>,
}

/// What [`judge`] found.
#[derive(Debug, Clone, Default)]
pub struct Judgement {
    /// T1.1 … T1.4, in that order.
    pub targets: Vec<Judged>,
    /// The plugin against the floor and the floor against itself, for each cell with the
    /// floor.
    pub references: Vec<Reference>,
}

/// `a / b`, or `None` when `b` is not a positive number.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (a.is_finite() && b.is_finite() && b > 0.0).then(|| a / b)
}

fn pct(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".to_owned(), |r| format!("{:.0} %", r * 100.0))
}

fn times(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}×"))
}

fn ops(r: &Row) -> String {
    group_thousands(r.ops_per_sec.round() as u64)
}

fn plural(c: usize) -> &'static str {
    if c == 1 { "client" } else { "clients" }
}

/// A target's id in a cell: the kind alone in its nominal cell (`nominal` clients, 0 ms).
pub fn target_id(kind: &str, nominal: usize, concurrency: usize, latency_ms: u64) -> String {
    match (concurrency == nominal, latency_ms == 0) {
        (true, true) => kind.to_owned(),
        (true, false) => format!("{kind}@{latency_ms}ms"),
        (false, true) => format!("{kind}@{concurrency}c"),
        (false, false) => format!("{kind}@{concurrency}c/{latency_ms}ms"),
    }
}

/// The failures among `rows`, as the reason for a miss; `None` when every row has calls
/// and none failed.
fn failures(rows: &[(&str, &Row)]) -> Option<String> {
    let bad: Vec<String> = rows
        .iter()
        .filter(|(_, r)| r.errors > 0 || r.ops == 0)
        .map(|(name, r)| {
            format!(
                "{name}: {} ok, {} failed{}",
                r.ops,
                r.errors,
                r.first_error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            )
        })
        .collect();
    (!bad.is_empty()).then(|| bad.join("; "))
}

/// Judges T1.1 … T1.4 on `rows` (the run's rows; `cells` index into them). Cells whose
/// rows are missing are skipped.
pub fn judge(rows: &[Row], cells: &[Cell]) -> Judgement {
    struct Rows<'a> {
        cell: Cell,
        status: &'a Row,
        hit: &'a Row,
        encrypt: &'a Row,
        floor: Option<(&'a Row, &'a Row)>,
    }
    let resolved: Vec<Rows<'_>> = cells
        .iter()
        .filter_map(|c| {
            Some(Rows {
                cell: *c,
                status: rows.get(c.status)?,
                hit: rows.get(c.hit)?,
                encrypt: rows.get(c.encrypt)?,
                floor: match c.floor {
                    Some(f) => Some((rows.get(f.status)?, rows.get(f.decrypt)?)),
                    None => None,
                },
            })
        })
        .collect();
    // The floor does not call Key Vault: its 0 ms figures stand beside every latency.
    let floor_at = |concurrency: usize| {
        resolved
            .iter()
            .filter(|r| r.cell.concurrency == concurrency)
            .find_map(|r| r.floor)
    };
    let mut j = Judgement::default();
    for r in &resolved {
        let c = r.cell;
        if c.concurrency < LOADED_CLIENTS {
            j.targets.push(Judged {
                target: hit_vs_status_few(c, r.status, r.hit),
                rows: vec![c.status, c.hit],
            });
        }
    }
    for r in &resolved {
        let c = r.cell;
        if c.concurrency >= LOADED_CLIENTS {
            j.targets.push(Judged {
                target: hit_vs_status_loaded(c, r.status, r.hit, floor_at(c.concurrency)),
                rows: vec![c.status, c.hit],
            });
        }
    }
    for r in &resolved {
        if let (Some((_, floor_decrypt)), Some(f)) = (r.floor, r.cell.floor)
            && r.cell.concurrency >= LOADED_CLIENTS
        {
            j.targets.push(Judged {
                target: hit_vs_floor(r.cell, r.hit, floor_decrypt),
                rows: vec![r.cell.hit, f.decrypt],
            });
        }
    }
    for r in &resolved {
        if r.cell.concurrency == 1 {
            j.targets.push(Judged {
                target: encrypt_vs_hit(r.cell, r.encrypt, r.hit),
                rows: vec![r.cell.encrypt, r.cell.hit],
            });
        }
    }
    for r in &resolved {
        if let Some((floor_status, floor_decrypt)) = r.floor {
            j.references.extend(references(
                r.cell,
                r.status,
                r.hit,
                floor_status,
                floor_decrypt,
            ));
        }
    }
    j
}

/// T1.1: the hot-path target where fewer clients share the CPUs.
fn hit_vs_status_few(c: Cell, status: &Row, hit: &Row) -> Target {
    let p50 = ratio(hit.p50_ms, status.p50_ms);
    let throughput = ratio(hit.ops_per_sec, status.ops_per_sec);
    let failed = failures(&[("Status", status), ("Decrypt hit", hit)]);
    let pass = failed.is_none()
        && p50.is_some_and(|r| r <= HIT_P50_LIMIT)
        && throughput.is_some_and(|r| r >= HIT_OPS_FEW);
    let why = (!pass).then(|| {
        failed.unwrap_or_else(|| {
            format!(
                "per call, a Decrypt hit carries ~0.7 KB (ciphertext, key_id, annotations) \
                 against Status's empty message, and the plugin validates it, hashes it \
                 (SHA-256) into the cache key, copies the seed out and queues one audit log \
                 line (written in batches by another task); measured CPU per call: plugin {:.0} µs vs {:.0} µs, bench clients \
                 {:.0} µs vs {:.0} µs. {}",
                hit.server_cpu_us_per_op,
                status.server_cpu_us_per_op,
                hit.client_cpu_us_per_op,
                status.client_cpu_us_per_op,
                if c.concurrency == 1 {
                    format!(
                        "One client's round trip is that CPU plus the socket: +{:.0} µs at p50",
                        (hit.p50_ms - status.p50_ms) * 1000.0
                    )
                } else {
                    format!(
                        "With {} clients on shared CPUs, throughput follows the total CPU per \
                         call ({:.0} vs {:.0} µs)",
                        c.concurrency,
                        hit.server_cpu_us_per_op + hit.client_cpu_us_per_op,
                        status.server_cpu_us_per_op + status.client_cpu_us_per_op
                    )
                }
            )
        })
    });
    Target {
        id: target_id("T1.1", 1, c.concurrency, c.latency_ms),
        target: format!(
            "Decrypt cache hit p50 within {HIT_P50_LIMIT}× of Status p50 and throughput at \
             least {:.0} % of Status's ({} {}, {} ms)",
            HIT_OPS_FEW * 100.0,
            c.concurrency,
            plural(c.concurrency),
            c.latency_ms
        ),
        figure: format!(
            "p50 {:.3} ms vs {:.3} ms = {}; {} vs {} ops/s = {}",
            hit.p50_ms,
            status.p50_ms,
            times(p50),
            ops(hit),
            ops(status),
            pct(throughput)
        ),
        pass,
        why,
    }
}

/// T1.2: hit throughput against Status's under load, the floor's own ratio beside it.
fn hit_vs_status_loaded(c: Cell, status: &Row, hit: &Row, floor: Option<(&Row, &Row)>) -> Target {
    let throughput = ratio(hit.ops_per_sec, status.ops_per_sec);
    let failed = failures(&[("Status", status), ("Decrypt hit", hit)]);
    let pass = failed.is_none() && throughput.is_some_and(|r| r >= HIT_OPS_LOADED);
    let at = if c.latency_ms == 0 { "" } else { " (0 ms run)" };
    let floor_ratio = floor.map(|(fs, fd)| (ratio(fd.ops_per_sec, fs.ops_per_sec), fs, fd));
    let floor_figure = match &floor_ratio {
        Some((r, fs, fd)) => format!(
            "; floor (bare tonic){at}: Decrypt {} vs Status {} ops/s = {}",
            ops(fd),
            ops(fs),
            pct(*r)
        ),
        None => format!("; no floor run at {} clients", c.concurrency),
    };
    let why = (!pass).then(|| {
        failed.unwrap_or_else(|| {
            let floor_part = floor_ratio
                .map(|(r, fs, fd)| {
                    format!(
                        " The floor's own Decrypt reaches {} of its Status (CPU per call {:.0} \
                         vs {:.0} µs): that much of the gap is tonic decoding the ~0.7 KB \
                         request and encoding the answer.",
                        pct(r),
                        fd.server_cpu_us_per_op,
                        fs.server_cpu_us_per_op
                    )
                })
                .unwrap_or_default();
            format!(
                "with {} clients on shared CPUs, throughput follows CPU per call: plugin \
                 {:.0} µs per hit vs {:.0} µs per Status, bench clients {:.0} vs {:.0} µs.\
                 {floor_part} The rest is the plugin's own work on a hit: validating the \
                 request, hashing it (SHA-256) into the cache key, copying the seed out, one \
                 audit log line (queued, written in batches by another task)",
                c.concurrency,
                hit.server_cpu_us_per_op,
                status.server_cpu_us_per_op,
                hit.client_cpu_us_per_op,
                status.client_cpu_us_per_op,
            )
        })
    });
    Target {
        id: target_id("T1.2", LOADED_CLIENTS, c.concurrency, c.latency_ms),
        target: format!(
            "Decrypt cache hit throughput at least {:.0} % of Status's ({} clients, {} ms)",
            HIT_OPS_LOADED * 100.0,
            c.concurrency,
            c.latency_ms
        ),
        figure: format!(
            "{} vs {} ops/s = {} (≥ {:.0} %){floor_figure}",
            ops(hit),
            ops(status),
            pct(throughput),
            HIT_OPS_LOADED * 100.0
        ),
        pass,
        why,
    }
}

/// T1.3: the plugin's cache hit against the floor's Decrypt of the same requests.
fn hit_vs_floor(c: Cell, hit: &Row, floor_decrypt: &Row) -> Target {
    let r = ratio(hit.ops_per_sec, floor_decrypt.ops_per_sec);
    let failed = failures(&[("Decrypt hit", hit), ("floor Decrypt", floor_decrypt)]);
    let pass = failed.is_none() && r.is_some_and(|r| r >= HIT_VS_FLOOR);
    let cpu = |row: &Row| row.server_cpu_us_per_op + row.client_cpu_us_per_op;
    let why = (!pass).then(|| {
        failed.unwrap_or_else(|| {
            format!(
                "the floor answers the same requests without looking at them: CPU per call \
                 {:.0} µs against the plugin's {:.0} µs (server and bench clients together: \
                 {:.0} vs {:.0} µs); with {} clients on shared CPUs throughput follows that \
                 total. The plugin's extra work on a hit: the authority layer, validating the \
                 request, the SHA-256 cache key, the cache lookup and copy, metrics and one \
                 audit log line (queued, written in batches by another task)",
                floor_decrypt.server_cpu_us_per_op,
                hit.server_cpu_us_per_op,
                cpu(floor_decrypt),
                cpu(hit),
                c.concurrency
            )
        })
    });
    Target {
        id: target_id("T1.3", LOADED_CLIENTS, c.concurrency, c.latency_ms),
        target: format!(
            "Decrypt cache hit throughput at least {HIT_VS_FLOOR}× the floor's (bare tonic) \
             Decrypt of the same requests ({} clients, {} ms)",
            c.concurrency, c.latency_ms
        ),
        figure: format!(
            "{} vs {} ops/s = {} (≥ {HIT_VS_FLOOR}×); p50 {:.3} vs {:.3} ms",
            ops(hit),
            ops(floor_decrypt),
            times(r),
            hit.p50_ms,
            floor_decrypt.p50_ms
        ),
        pass,
        why,
    }
}

/// T1.4: Encrypt as cheap as a cache hit, give or take 2×, and without Key Vault.
fn encrypt_vs_hit(c: Cell, encrypt: &Row, hit: &Row) -> Target {
    let p50 = ratio(encrypt.p50_ms, hit.p50_ms);
    let wraps = encrypt.kv.authenticated("keys.encrypt");
    let kv_ok = wraps == 0 && encrypt.kv_calls_per_op < ENCRYPT_KV_PER_OP;
    let failed = failures(&[("Encrypt", encrypt), ("Decrypt hit", hit)]);
    let pass = failed.is_none() && kv_ok && p50.is_some_and(|r| r <= ENCRYPT_P50_LIMIT);
    let why = (!pass).then(|| {
        failed.unwrap_or_else(|| {
            if kv_ok {
                format!(
                    "no Key Vault call, but an Encrypt costs the plugin {:.0} µs of CPU \
                     against {:.0} µs for a hit",
                    encrypt.server_cpu_us_per_op, hit.server_cpu_us_per_op
                )
            } else {
                let side = encrypt
                    .kv_side_p50_ms
                    .map(|ms| format!(", mock-vault answering in {ms:.0} ms at p50"))
                    .unwrap_or_default();
                format!(
                    "Encrypt calls Key Vault ({:.3} vault requests per Encrypt{side}): each \
                     waits for a Key Vault round trip and its TLS and JSON. Wrapping locally \
                     with the key's public key would make none",
                    encrypt.kv_calls_per_op
                )
            }
        })
    });
    Target {
        id: target_id("T1.4", 1, c.concurrency, c.latency_ms),
        target: format!(
            "Encrypt p50 at most {ENCRYPT_P50_LIMIT}× the Decrypt cache hit p50, with 0 Key \
             Vault calls per Encrypt ({} {}, {} ms)",
            c.concurrency,
            plural(c.concurrency),
            c.latency_ms
        ),
        figure: format!(
            "p50 {:.3} ms vs {:.3} ms = {} (≤ {ENCRYPT_P50_LIMIT}×); {} keys.encrypt and {} \
             vault requests in all for {} Encrypts ({:.3} per Encrypt; < {ENCRYPT_KV_PER_OP} \
             allows the background key poll)",
            encrypt.p50_ms,
            hit.p50_ms,
            times(p50),
            group_thousands(wraps),
            group_thousands(encrypt.kv_calls),
            group_thousands(encrypt.ops),
            encrypt.kv_calls_per_op
        ),
        pass,
        why,
    }
}

/// The plugin against the floor, and the floor's Decrypt against its Status, in one cell.
fn references(
    c: Cell,
    status: &Row,
    hit: &Row,
    floor_status: &Row,
    floor_decrypt: &Row,
) -> [Reference; 3] {
    let at = format!(
        "{} {}, {} ms",
        c.concurrency,
        plural(c.concurrency),
        c.latency_ms
    );
    let pair = |what: String, a: &Row, b: &Row| {
        let r = ratio(a.ops_per_sec, b.ops_per_sec);
        Reference {
            what,
            ratio: r,
            figure: format!(
                "{} vs {} ops/s = {}; p50 {:.3} vs {:.3} ms",
                ops(a),
                ops(b),
                times(r),
                a.p50_ms,
                b.p50_ms
            ),
        }
    };
    [
        pair(
            format!("plugin Decrypt hit / floor Decrypt ({at})"),
            hit,
            floor_decrypt,
        ),
        pair(
            format!("plugin Status / floor Status ({at})"),
            status,
            floor_status,
        ),
        pair(
            format!("floor Decrypt / floor Status ({at})"),
            floor_decrypt,
            floor_status,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::procs::Measure;
    use super::super::report::Latencies;
    use super::*;

    fn row(name: &str, c: usize, latency: u64, ops_per_sec: f64, p50_ms: f64) -> Row {
        let mut r = Row::new(
            "kms",
            name,
            c,
            latency,
            &Latencies::new(vec![(p50_ms * 1000.0) as u64]),
            0,
            None,
            1.0,
            Measure::default(),
        );
        r.ops = ops_per_sec as u64;
        r.ops_per_sec = ops_per_sec;
        r.p50_ms = p50_ms;
        r
    }

    /// The default matrix: 1 and 64 clients at 0 ms with the floor, and at 20 ms without.
    /// Figures per cell: (Status ops/s, hit ops/s, hit p50 ms, Encrypt p50 ms); per 0 ms
    /// cell: (floor Status ops/s, floor Decrypt ops/s).
    fn matrix(figures: [(f64, f64, f64, f64); 4], floor: [(f64, f64); 2]) -> (Vec<Row>, Vec<Cell>) {
        let mut rows = Vec::new();
        let mut cells = Vec::new();
        for (i, (latency, c)) in [(0, 1), (0, 64), (20, 1), (20, 64)].into_iter().enumerate() {
            let (status_ops, hit_ops, hit_p50, enc_p50) = figures[i];
            let base = rows.len();
            rows.push(row("KMS Status", c, latency, status_ops, 0.2));
            rows.push(row("KMS Decrypt, cache hit", c, latency, hit_ops, hit_p50));
            rows.push(row("KMS Encrypt", c, latency, 1000.0, enc_p50));
            let floor_rows = (latency == 0).then(|| {
                let (fs, fd) = floor[i];
                rows.push(row("floor (bare tonic) Status", c, 0, fs, 0.1));
                rows.push(row("floor (bare tonic) Decrypt", c, 0, fd, 0.12));
                FloorRows {
                    status: base + 3,
                    decrypt: base + 4,
                }
            });
            cells.push(Cell {
                concurrency: c,
                latency_ms: latency,
                status: base,
                hit: base + 1,
                encrypt: base + 2,
                floor: floor_rows,
            });
        }
        (rows, cells)
    }

    fn find<'a>(j: &'a Judgement, id: &str) -> &'a Judged {
        j.targets.iter().find(|t| t.target.id == id).unwrap()
    }

    #[test]
    fn ratios_refuse_a_zero_divisor() {
        assert_eq!(ratio(3.0, 4.0), Some(0.75));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(0.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
        assert_eq!(pct(Some(0.854)), "85 %");
        assert_eq!(times(None), "n/a");
    }

    #[test]
    fn ids_name_the_cell_when_it_is_not_the_nominal_one() {
        assert_eq!(target_id("T1.2", 64, 64, 0), "T1.2");
        assert_eq!(target_id("T1.2", 64, 64, 20), "T1.2@20ms");
        assert_eq!(target_id("T1.1", 1, 8, 0), "T1.1@8c");
        assert_eq!(target_id("T1.1", 1, 8, 20), "T1.1@8c/20ms");
    }

    #[test]
    fn the_default_matrix_gives_each_target_once_per_cell() {
        let (rows, cells) = matrix(
            [
                (4000.0, 3600.0, 0.25, 0.4),
                (20000.0, 17500.0, 3.0, 5.0),
                (4000.0, 3000.0, 0.30, 25.0),
                (20000.0, 16000.0, 3.0, 50.0),
            ],
            [(5000.0, 4500.0), (25000.0, 20000.0)],
        );
        let j = judge(&rows, &cells);
        let ids: Vec<&str> = j.targets.iter().map(|t| t.target.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "T1.1",
                "T1.1@20ms",
                "T1.2",
                "T1.2@20ms",
                "T1.3",
                "T1.4",
                "T1.4@20ms"
            ]
        );
        // 1 client: 3600/4000 = 90 %, 0.25/0.2 = 1.25×.
        assert!(find(&j, "T1.1").target.pass);
        // 1 client at 20 ms: 75 % < 80 %.
        assert!(!find(&j, "T1.1@20ms").target.pass);
        // 64 clients: 17500/20000 = 87.5 % ≥ 85 %, with the floor's 80 % beside.
        let t12 = &find(&j, "T1.2").target;
        assert!(t12.pass, "{t12:?}");
        assert!(t12.figure.contains("88 %") && t12.figure.contains("= 80 %"));
        assert_eq!(find(&j, "T1.2").rows, vec![cells[1].status, cells[1].hit]);
        // At 20 ms: 80 % < 85 %; the floor's 0 ms figures stand beside.
        let t12b = &find(&j, "T1.2@20ms").target;
        assert!(!t12b.pass && t12b.figure.contains("(0 ms run)"));
        assert!(t12b.why.as_deref().unwrap().contains("80 %"));
        // Hit against the floor's Decrypt: 17500/20000 = 0.875× ≥ 0.85×.
        let t13 = find(&j, "T1.3");
        assert!(t13.target.pass);
        assert_eq!(
            t13.rows,
            vec![cells[1].hit, cells[1].floor.unwrap().decrypt]
        );
        // Encrypt 0.4 / 0.25 = 1.6× with no vault request: pass; 25 ms at 20 ms: miss.
        assert!(find(&j, "T1.4").target.pass);
        assert!(!find(&j, "T1.4@20ms").target.pass);
        // Three reference ratios per cell with the floor.
        assert_eq!(j.references.len(), 6);
        let hit_floor_1 = &j.references[0];
        assert!(hit_floor_1.what.contains("1 client,"));
        assert_eq!(hit_floor_1.ratio, Some(3600.0 / 4500.0));
        assert_eq!(j.references[5].ratio, Some(20000.0 / 25000.0));
    }

    #[test]
    fn encrypt_that_calls_key_vault_misses_however_fast() {
        let (mut rows, cells) = matrix(
            [(4000.0, 3600.0, 0.25, 0.3); 4],
            [(5000.0, 4500.0), (25000.0, 20000.0)],
        );
        let enc = &mut rows[cells[0].encrypt];
        enc.kv
            .authenticated_by_operation
            .insert("keys.encrypt".into(), enc.ops);
        enc.kv_calls = enc.ops;
        enc.kv_calls_per_op = 1.0;
        let t = find(&judge(&rows, &cells), "T1.4").target.clone();
        assert!(!t.pass);
        assert!(t.why.unwrap().contains("calls Key Vault"));

        // A background key poll in the run is not a call per Encrypt.
        let enc = &mut rows[cells[0].encrypt];
        enc.kv.authenticated_by_operation.clear();
        enc.kv
            .authenticated_by_operation
            .insert("keys.get".into(), 1);
        enc.kv_calls = 2;
        enc.kv_calls_per_op = 2.0 / 1000.0;
        assert!(find(&judge(&rows, &cells), "T1.4").target.pass);
    }

    #[test]
    fn no_calls_or_failed_calls_never_pass() {
        let (mut rows, cells) = matrix(
            [(4000.0, 3600.0, 0.25, 0.3); 4],
            [(5000.0, 4500.0), (0.0, 0.0)],
        );
        // The floor at 64 clients answered nothing: no ratio, a miss.
        let t13 = find(&judge(&rows, &cells), "T1.3").target.clone();
        assert!(!t13.pass && t13.figure.contains("n/a"));
        rows[cells[0].hit].errors = 3;
        rows[cells[0].hit].first_error = Some("Internal: boom".into());
        let t11 = find(&judge(&rows, &cells), "T1.1").target.clone();
        assert!(!t11.pass && t11.why.unwrap().contains("boom"));
    }

    #[test]
    fn missing_rows_and_other_concurrencies() {
        let (rows, mut cells) = matrix(
            [(4000.0, 3600.0, 0.25, 0.3); 4],
            [(5000.0, 4500.0), (25000.0, 20000.0)],
        );
        cells[0].concurrency = 8;
        cells[3].hit = rows.len() + 10;
        let j = judge(&rows, &cells);
        let ids: Vec<&str> = j.targets.iter().map(|t| t.target.id.as_str()).collect();
        assert_eq!(ids, ["T1.1@8c", "T1.1@20ms", "T1.2", "T1.3", "T1.4@20ms"]);
    }
}
