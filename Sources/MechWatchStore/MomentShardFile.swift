import Crypto
import CSQLite
import Foundation
import MechWatchCore

/// Moment shard files (issue 13): a `MomentShard` in a small SQLite file of its own, written by
/// `mechwatch reference export --moments`, `mechwatch reference merge` and the Python client's
/// `mechwatch.moments` (for corpora fitted on Dask or any other engine), read by `import`.
///
/// The format is independent of the daemon's schema version (a shard written by any MechWatch of this
/// format imports into any other). Tables — vectors are little-endian blobs, float64 for moments and
/// float32 for traces; "packed" is the lower triangle column by column, `(i, j)` for `j` ascending, `i ≥ j`:
/// - `moment_shard`, one row: `format`, `reference`, `calibration_fraction`, `alpha`, `fit_count`,
///   `calibration_count`, `sample_capacity`, `written_at`, `checksum`;
/// - `shard_sites`, per site by `position`: `name`, `width`, `count`, `mean`, `comoment` (packed
///   `Σ(x−μ)(x−μ)ᵀ`), `third` (`Σ‖x−μ‖²(x−μ)`), `fourth` (`Σ‖x−μ‖⁴`), `labelled` (fit traces with an
///   output), `within` (packed pooled within-output co-moment);
/// - `shard_transitions`, per consecutive pair by `position` (of the earlier site): `comoment`, `C_yx` of
///   the later site `y` against the earlier `x`, `width_y × width_x` column-major;
/// - `shard_outputs`, by `(position, output)`: `count`, `mean`;
/// - `shard_sample`, by `row`: `trace_id`, `output`, `vector` — the sample's traces (`HashSample`);
/// - `shard_calibration`, by `row`: `trace_id`, `output`, `vector` — the held-out traces.
/// `checksum` is the SHA-256 (hex) of the header's other columns but `written_at`, then of each table's
/// name and rows in that order (`Statement.hashRow`), so a file edited or damaged in any value is refused.
package enum MomentShardFile {
    /// The format `moment_shard.format` holds.
    package static let format = 1

    static let schema = """
        CREATE TABLE moment_shard (format INTEGER NOT NULL, reference TEXT NOT NULL, calibration_fraction REAL NOT NULL,
            alpha REAL NOT NULL, fit_count INTEGER NOT NULL, calibration_count INTEGER NOT NULL, sample_capacity INTEGER NOT NULL,
            written_at TEXT NOT NULL, checksum TEXT NOT NULL);
        CREATE TABLE shard_sites (position INTEGER PRIMARY KEY, name TEXT NOT NULL, width INTEGER NOT NULL, count INTEGER NOT NULL,
            mean BLOB NOT NULL, comoment BLOB NOT NULL, third BLOB NOT NULL, fourth REAL NOT NULL, labelled INTEGER NOT NULL,
            within BLOB NOT NULL);
        CREATE TABLE shard_transitions (position INTEGER PRIMARY KEY, comoment BLOB NOT NULL);
        CREATE TABLE shard_outputs (position INTEGER NOT NULL, output INTEGER NOT NULL, count INTEGER NOT NULL, mean BLOB NOT NULL,
            PRIMARY KEY (position, output));
        CREATE TABLE shard_sample (row INTEGER PRIMARY KEY, trace_id TEXT NOT NULL, output INTEGER, vector BLOB NOT NULL);
        CREATE TABLE shard_calibration (row INTEGER PRIMARY KEY, trace_id TEXT NOT NULL, output INTEGER, vector BLOB NOT NULL);
        """

    /// The tables the checksum covers, in order, with their row order.
    static let tables = [("shard_sites", "position"), ("shard_transitions", "position"), ("shard_outputs", "position, output"),
                         ("shard_sample", "row"), ("shard_calibration", "row")]

    /// The widest site a shard may describe (as the protocol's layouts).
    package static let maximumWidth = 1 << 24
    /// The most traces a shard may count: every count stays exact in a Double and sums of two stay in an Int.
    package static let maximumCount = 1 << 53
    /// The longest trace id or site name, in bytes (as the protocol's).
    package static let maximumTextLength = 256
    /// The largest sample a shard may keep.
    package static let maximumSample = 1 << 31

    /// The reference name, sites, calibration fraction, alpha and calibration count of the shard `db` (the
    /// file at `path`), read without its moments (to check what estimating it would need before reading
    /// them); `read` verifies the rest.
    static func header(of db: SQLiteConnection, path: String) throws(StoreError) -> Header {
        guard let (name, fraction, alpha, calibration) = try db.prepare("SELECT reference, calibration_fraction, alpha, calibration_count FROM moment_shard")
            .firstRow({ ($0.text(0), $0.double(1), $0.double(2), $0.int(3)) }) else {
            throw StoreError(.corrupt, "'\(path)': table moment_shard has no row")
        }
        guard (0...Int64(maximumCount)).contains(calibration) else {
            throw StoreError(.corrupt, "'\(path)': moment_shard.calibration_count is \(calibration); expected 0–\(maximumCount)")
        }
        let count = try db.prepare("SELECT count(*) FROM shard_sites").firstRow { $0.int(0) } ?? 0
        guard (1...65536).contains(count) else { throw StoreError(.corrupt, "'\(path)': shard_sites has \(count) rows; expected 1–65536") }
        var sites: [SiteLayout.Site] = []
        let rows = try db.prepare("SELECT position, name, width FROM shard_sites ORDER BY position")
        while try rows.step() { sites.append(try site(rows, position: sites.count, path: path)) }
        return Header(name: name, layout: SiteLayout(sites), calibrationFraction: fraction, alpha: alpha, calibrationCount: Int(calibration))
    }

    /// What `header(of:path:)` reads.
    package struct Header: Sendable {
        package var name: String
        package var layout: SiteLayout
        package var calibrationFraction: Double
        package var alpha: Double
        /// The held-out traces it holds (a reference's calibration is most of its memory when they are many).
        package var calibrationCount: Int
    }

    /// Checks that the untrusted connection `db` (the file at `path`) holds the shard tables with their
    /// columns, and that its trace ids and site names are text the protocol takes.
    static func checkShard(_ db: SQLiteConnection, path: String) throws(StoreError) {
        guard isShard(db) else {
            throw StoreError(.corrupt, "'\(path)' is not a moment shard file (no table moment_shard); write one with `mechwatch reference export --moments` or mechwatch.moments")
        }
        try UntrustedFile.refuseWAL(db, path: path)
        try UntrustedFile.checkTables(db, try expectedTables(), path: path)
        let rows = try db.prepare("SELECT count(*) FROM moment_shard").firstRow { $0.int(0) } ?? 0
        guard rows == 1 else { throw StoreError(.corrupt, "'\(path)': table moment_shard has \(rows == 0 ? "no row" : "more than one row")") }
        guard try db.prepare("""
                  SELECT count(*) FROM moment_shard WHERE typeof(format) = 'integer' AND typeof(reference) = 'text'
                      AND length(CAST(reference AS BLOB)) <= 256 AND typeof(calibration_fraction) = 'real' AND typeof(alpha) = 'real'
                      AND typeof(fit_count) = 'integer' AND typeof(calibration_count) = 'integer' AND typeof(sample_capacity) = 'integer'
                      AND typeof(written_at) = 'text' AND length(written_at) <= 64 AND typeof(checksum) = 'text' AND length(checksum) <= 64
                  """).firstRow({ $0.int(0) }) == 1 else {
            throw StoreError(.corrupt, "'\(path)': moment_shard should hold one row: an integer format and counts, real alpha and calibration fraction, short texts")
        }
        // Trace ids and site names as the protocol takes them (1–256 bytes, no NUL: SQLite text would end there,
        // and the checksum would then fail as if the file were damaged).
        for (table, key, column) in [("shard_sites", "position", "name"), ("shard_sample", "row", "trace_id"), ("shard_calibration", "row", "trace_id")] {
            let bad = try db.prepare("""
                SELECT \(key) FROM \(table) WHERE typeof(\(column)) != 'text' OR length(CAST(\(column) AS BLOB)) NOT BETWEEN 1 AND \(maximumTextLength)
                    OR instr(CAST(\(column) AS BLOB), x'00') > 0 LIMIT 1
                """).firstRow { $0.int(0) }
            if let row = bad {
                throw StoreError(.corrupt, "'\(path)': \(table) row \(row): \(column) must be 1–\(maximumTextLength) bytes of text without NUL")
            }
        }
    }

    /// The shard tables with their columns, as `schema` creates them.
    private static func expectedTables() throws(StoreError) -> [(table: String, required: [String], allowed: [String])] {
        let db = try SQLiteConnection(path: ":memory:")
        try db.execute(schema)
        var tables: [(String, [String], [String])] = []
        for table in ["moment_shard"] + Self.tables.map(\.0) {
            let columns = try db.columns(of: table)
            tables.append((table, columns, columns))
        }
        return tables
    }

    /// Refuses a shard whose rows are more, or whose values are longer or shorter, than its sites and
    /// header imply — by their lengths, before any value is read.
    private static func checkSizes(_ db: SQLiteConnection, calibration: Int, capacity: Int, path: String) throws(StoreError) {
        let width = "(SELECT sum(width) FROM shard_sites)"
        let checks: [(String, String)] = [
            ("""
             SELECT position FROM shard_sites WHERE typeof(position) != 'integer' OR typeof(count) != 'integer' OR typeof(labelled) != 'integer'
                 OR typeof(fourth) NOT IN ('integer', 'real') LIMIT 1
             """, "shard_sites: position, count, labelled and fourth must be numbers"),
            ("SELECT position FROM shard_transitions WHERE typeof(position) != 'integer' LIMIT 1", "shard_transitions: position must be an integer"),
            ("""
             SELECT position FROM shard_outputs WHERE typeof(position) != 'integer' OR typeof(output) != 'integer' OR typeof(count) != 'integer' LIMIT 1
             """, "shard_outputs: position, output and count must be integers"),
            ("SELECT row FROM shard_sample WHERE typeof(row) != 'integer' OR (output IS NOT NULL AND typeof(output) != 'integer') LIMIT 1",
             "shard_sample: row and output must be integers"),
            ("SELECT row FROM shard_calibration WHERE typeof(row) != 'integer' OR (output IS NOT NULL AND typeof(output) != 'integer') LIMIT 1",
             "shard_calibration: row and output must be integers"),
            ("SELECT count(*) FROM shard_sites HAVING count(*) NOT BETWEEN 1 AND 65536 OR count(DISTINCT position) < count(*)",
             "shard_sites: expected 1–65536 sites, each position once"),
            ("""
             SELECT position FROM shard_sites WHERE typeof(width) != 'integer' OR width NOT BETWEEN 1 AND \(maximumWidth)
                 OR length(mean) IS NOT 8 * width OR length(third) IS NOT 8 * width
                 OR length(comoment) IS NOT 4 * width * (width + 1) OR length(within) IS NOT 4 * width * (width + 1) LIMIT 1
             """, "shard_sites: a site's width is out of range, or its moments' sizes do not follow it"),
            ("""
             SELECT t.position FROM shard_transitions t LEFT JOIN shard_sites x ON x.position = t.position
                 LEFT JOIN shard_sites y ON y.position = t.position + 1
             WHERE y.width IS NULL OR length(t.comoment) IS NOT 8 * x.width * y.width LIMIT 1
             """, "shard_transitions: a row names no pair of consecutive sites, or its size does not follow their widths"),
            ("SELECT count(*) FROM shard_transitions HAVING count(*) >= (SELECT count(*) FROM shard_sites) + 1",
             "shard_transitions: more rows than pairs of sites"),
            ("""
             SELECT o.position FROM shard_outputs o LEFT JOIN shard_sites s ON s.position = o.position
             WHERE s.width IS NULL OR length(o.mean) IS NOT 8 * s.width LIMIT 1
             """, "shard_outputs: a row names no site, or its mean does not follow the site's width"),
            ("SELECT count(*) FROM shard_outputs HAVING count(*) > 65536 * (SELECT count(*) FROM shard_sites)",
             "shard_outputs: more than 65536 outputs per site"),
            ("SELECT count(*) FROM shard_sample HAVING count(*) > \(capacity)",
             "shard_sample: more rows than sample_capacity (\(capacity))"),
            ("SELECT count(*) FROM shard_calibration HAVING count(*) != \(calibration)",
             "shard_calibration: not as many rows as moment_shard.calibration_count (\(calibration))"),
            ("SELECT row FROM shard_sample WHERE length(vector) IS NOT 4 * \(width) LIMIT 1",
             "shard_sample: a row does not hold one float32 trace of the sites' widths"),
            ("SELECT row FROM shard_calibration WHERE length(vector) IS NOT 4 * \(width) LIMIT 1",
             "shard_calibration: a row does not hold one float32 trace of the sites' widths"),
        ]
        for (sql, message) in checks where try db.prepare(sql).firstRow({ _ in true }) == true {
            throw StoreError(.corrupt, "'\(path)': \(message)")
        }
    }

    /// A `shard_sites` row's site (columns position, name, width first), checked.
    private static func site(_ rows: Statement, position s: Int, path: String) throws(StoreError) -> SiteLayout.Site {
        guard rows.int(0) == Int64(s) else { throw StoreError(.corrupt, "'\(path)': shard_sites.position \(rows.int(0)) out of sequence; expected \(s)") }
        let name = rows.text(1), width = rows.int(2)
        guard (1...Int64(maximumWidth)).contains(width), !name.isEmpty else {
            throw StoreError(.corrupt, "'\(path)': shard_sites row \(s): expected a name and a width from 1 to \(maximumWidth), got \"\(name)\", \(width)")
        }
        return .init(name: name, width: Int(width))
    }

    /// Whether `db` is a moment shard file's (it has a `moment_shard` table).
    static func isShard(_ db: SQLiteConnection) -> Bool {
        (try? db.prepare("SELECT count(*) FROM sqlite_schema WHERE name = 'moment_shard'").firstRow { $0.int(0) }) == 1
    }

    /// Writes `shard`, as reference `name`, to a new file at `path` (which must not exist); removes the
    /// file if anything fails.
    package static func write(_ shard: MomentShard, name: String, to path: String) throws(StoreError) {
        guard access(path, F_OK) != 0 else { throw StoreError(.cannotOpen, "'\(path)' exists; a moment shard file is always written new") }
        let fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0o644)
        guard fd >= 0 else { throw StoreError(.cannotOpen, "cannot create moment shard file '\(path)': \(String(cString: strerror(errno)))") }
        close(fd)
        do {
            let db = try SQLiteConnection(path: path)
            try db.transaction { () throws(StoreError) in
                try db.execute(schema)
                try insert(shard, into: db)
                try db.prepare("""
                    INSERT INTO moment_shard VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), '')
                    """).bind(.integer(Int64(format)), .text(name), .real(shard.calibrationFraction), .real(shard.alpha),
                              .integer(Int64(shard.fitCount)), .integer(Int64(shard.calibration.count)),
                              .integer(Int64(shard.sample.capacity))).run()
                try db.prepare("UPDATE moment_shard SET checksum = ?1").bind(.text(try checksum(db))).run()
            }
        } catch {
            unlink(path)
            throw error
        }
    }

    private static func insert(_ shard: MomentShard, into db: SQLiteConnection) throws(StoreError) {
        let site = try db.prepare("INSERT INTO shard_sites VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")
        let output = try db.prepare("INSERT INTO shard_outputs VALUES (?1, ?2, ?3, ?4)")
        for (s, (m, o)) in zip(shard.moments, shard.outputs).enumerated() {
            let spec = shard.layout.sites[s]
            let aboutMean = m.rebased(to: m.mean)  // `third` and `fourth` as the format keeps them
            try site.bind(.integer(Int64(s)), .text(spec.name), .integer(Int64(spec.width)), .integer(Int64(m.count)),
                          .blob(Blob.float64(m.mean)), .blob(Blob.float64(packed(m.comoment, width: m.width))),
                          .blob(Blob.float64(aboutMean.sumQA)), .real(aboutMean.sumQ2), .integer(Int64(o.count)),
                          .blob(Blob.float64(packed(o.comoment, width: o.width)))).run()
            for label in o.counts.keys.sorted() {
                try output.bind(.integer(Int64(s)), .integer(Int64(label)), .integer(Int64(o.counts[label]!)), .blob(Blob.float64(o.means[label]!))).run()
            }
        }
        let transition = try db.prepare("INSERT INTO shard_transitions VALUES (?1, ?2)")
        for (k, c) in shard.crosses.enumerated() { try transition.bind(.integer(Int64(k)), .blob(Blob.float64(c.comoment))).run() }
        let sample = try db.prepare("INSERT INTO shard_sample VALUES (?1, ?2, ?3, ?4)")
        for (row, item) in shard.sample.items.enumerated() {
            try sample.bind(.integer(Int64(row)), .text(item.id), .optional(item.output), .blob(Blob.float32(item.vector))).run()
        }
        let calibration = try db.prepare("INSERT INTO shard_calibration VALUES (?1, ?2, ?3, ?4)")
        let width = shard.layout.totalWidth
        for (row, trace) in shard.calibration.enumerated() {
            let flat = trace.sites.flatMap { $0 }
            precondition(flat.count == width)
            try calibration.bind(.integer(Int64(row)), .text(trace.id), .optional(trace.output), .blob(Blob.float32(flat[...]))).run()
        }
    }

    /// The SHA-256 (hex) of the shard's header values and rows.
    private static func checksum(_ db: SQLiteConnection) throws(StoreError) -> String {
        var hash = SHA256()
        let header = try db.prepare("SELECT format, reference, calibration_fraction, alpha, fit_count, calibration_count, sample_capacity FROM moment_shard")
        while try header.step() { header.hashRow(into: &hash) }
        for (table, order) in tables {
            hash.update(data: Array("\(table)\u{0}".utf8))
            let rows = try db.prepare("SELECT * FROM \(table) ORDER BY \(order)")
            while try rows.step() { rows.hashRow(into: &hash) }
        }
        return hash.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// Reads and verifies the moment shard file at `path` (format, checksum, every value's size and
    /// finiteness): its reference's name and the shard.
    package static func read(at path: String) throws(StoreError) -> (name: String, shard: MomentShard) {
        let db = try UntrustedFile.open(path)
        try checkShard(db, path: path)
        return try read(db, path: path)
    }

    /// Reads and verifies the shard `db` (checked by `checkShard`), the file at `path`.
    static func read(_ db: SQLiteConnection, path: String) throws(StoreError) -> (name: String, shard: MomentShard) {
        func corrupt(_ what: String) -> StoreError { StoreError(.corrupt, "'\(path)': \(what)") }
        typealias Header = (format: Int, name: String, fraction: Double, alpha: Double, fit: Int, calibration: Int, capacity: Int, checksum: String)
        let header: Header?
        do {
            header = try db.prepare("SELECT format, reference, calibration_fraction, alpha, fit_count, calibration_count, sample_capacity, checksum FROM moment_shard")
                .firstRow { (Int($0.int(0)), $0.text(1), $0.double(2), $0.double(3), Int($0.int(4)), Int($0.int(5)), Int($0.int(6)), $0.text(7)) }
        } catch {
            throw StoreError(.corrupt, "'\(path)' is not a moment shard file (\(error.message)); write one with `mechwatch reference export --moments` or mechwatch.moments")
        }
        guard let h = header else { throw corrupt("table moment_shard has no row") }
        guard try db.prepare("SELECT count(*) FROM moment_shard").firstRow({ $0.int(0) }) == 1 else { throw corrupt("table moment_shard has more than one row") }
        guard h.format == format else { throw corrupt("moment shard format \(h.format); this mechwatch reads format \(format)") }
        guard (0...maximumCount).contains(h.calibration), (0...maximumSample).contains(h.capacity) else {
            throw corrupt("moment_shard.calibration_count and sample_capacity are \(h.calibration), \(h.capacity); expected 0–\(maximumCount) and 0–\(maximumSample)")
        }
        try checkSizes(db, calibration: h.calibration, capacity: h.capacity, path: path)  // before the checksum reads any value
        let actual = try checksum(db)
        guard actual == h.checksum else { throw StoreError(.corrupt, "'\(path)' is damaged: the checksum of its moments is \(actual), the file records \(h.checksum)") }
        guard h.fraction > 0, h.fraction < 1 else { throw corrupt("moment_shard.calibration_fraction is \(h.fraction); expected a number in (0, 1)") }
        guard h.alpha > 0, h.alpha < 1 else { throw corrupt("moment_shard.alpha is \(h.alpha); expected a number in (0, 1)") }
        guard (0...maximumCount).contains(h.fit), (0...maximumCount).contains(h.calibration), (0...maximumSample).contains(h.capacity) else {
            throw corrupt("moment_shard.fit_count, calibration_count and sample_capacity are \(h.fit), \(h.calibration), \(h.capacity); expected 0–\(maximumCount) traces and a sample of 0–\(maximumSample)")
        }

        var sites: [SiteLayout.Site] = [], moments: [RunningMoments] = [], within: [(count: Int, comoment: [Double])] = []
        let rows = try db.prepare("SELECT position, name, width, count, mean, comoment, third, fourth, labelled, within FROM shard_sites ORDER BY position")
        while try rows.step() {
            let spec = try site(rows, position: sites.count, path: path), width = spec.width, name = spec.name
            func vector(_ column: Int32, _ field: String, count: Int) throws(StoreError) -> [Double] {
                let v = rows.isNull(column) ? [] : Blob.float64(rows.blob(column))
                guard rows.blob(column).count == 8 * count, v.allSatisfy(\.isFinite) else {
                    throw corrupt("shard_sites.\(field) of site '\(name)': expected \(count) finite float64 values")
                }
                return v
            }
            let packedCount = width * (width + 1) / 2
            let count = Int(rows.int(3)), labelled = Int(rows.int(8))
            guard count == h.fit, labelled >= 0, labelled <= count else {
                throw corrupt("shard_sites.count/labelled of site '\(name)' are \(count)/\(labelled); expected count = fit_count (\(h.fit)) and 0 ≤ labelled ≤ count")
            }
            let fourth = rows.double(7)
            guard fourth.isFinite, fourth >= 0 else { throw corrupt("shard_sites.fourth of site '\(name)': expected a finite non-negative number") }
            let mean = try vector(4, "mean", count: width), comoment = try vector(5, "comoment", count: packedCount)
            // Traces are float32: a mean beyond its range, or a co-moment beyond n·(2·max)², no traces produced.
            let largest = Double(Float.greatestFiniteMagnitude)
            guard mean.allSatisfy({ abs($0) <= largest }), comoment.allSatisfy({ abs($0) <= Double(max(count, 1)) * 4 * largest * largest }) else {
                throw corrupt("shard_sites.mean or comoment of site '\(name)' holds values float32 traces cannot produce")
            }
            moments.append(RunningMoments(count: count, mean: mean, comoment: unpacked(comoment, width: width),
                                          third: try vector(6, "third", count: width), fourth: fourth))
            within.append((labelled, unpacked(try vector(9, "within", count: packedCount), width: width)))
            sites.append(spec)
        }
        guard !sites.isEmpty else { throw corrupt("shard_sites has no row") }
        guard Set(sites.map(\.name)).count == sites.count else { throw corrupt("shard_sites names a site twice") }
        let layout = SiteLayout(sites)

        var counts = [[Int: Int]](repeating: [:], count: sites.count), means = [[Int: [Double]]](repeating: [:], count: sites.count)
        let outputs = try db.prepare("SELECT position, output, count, mean FROM shard_outputs ORDER BY position, output")
        while try outputs.step() {
            let s = Int(outputs.int(0)), label = Int(outputs.int(1)), n = Int(outputs.int(2))
            guard sites.indices.contains(s) else { throw corrupt("shard_outputs.position \(s) names no site") }
            let mean = Blob.float64(outputs.blob(3))
            guard (1...max(1, within[s].count)).contains(n), outputs.blob(3).count == 8 * sites[s].width, mean.allSatisfy(\.isFinite) else {
                throw corrupt("shard_outputs row (\(s), \(label)): expected a count from 1 to the site's labelled traces (\(within[s].count)) and \(sites[s].width) finite float64 values")
            }
            counts[s][label] = n
            means[s][label] = mean
        }
        var outputMoments: [OutputMoments] = []
        for s in sites.indices {
            guard counts[s].values.reduce(0, +) == within[s].count, counts[s] == counts[0] else {
                throw corrupt("shard_outputs of site '\(sites[s].name)': the counts add to \(counts[s].values.reduce(0, +)), shard_sites.labelled is \(within[s].count); every site must list the same outputs with the same counts")
            }
            outputMoments.append(OutputMoments(width: sites[s].width, counts: counts[s], means: means[s], comoment: within[s].comoment))
        }

        var crosses: [CrossMoments] = []
        let transitions = try db.prepare("SELECT position, comoment FROM shard_transitions ORDER BY position")
        while try transitions.step() {
            let k = crosses.count
            guard transitions.int(0) == Int64(k), k + 1 < sites.count else { throw corrupt("shard_transitions.position \(transitions.int(0)) out of sequence; expected \(k) of \(sites.count - 1)") }
            let c = Blob.float64(transitions.blob(1))
            guard transitions.blob(1).count == 8 * sites[k].width * sites[k + 1].width, c.allSatisfy(\.isFinite) else {
                throw corrupt("shard_transitions.comoment \(k): expected \(sites[k].width * sites[k + 1].width) finite float64 values")
            }
            crosses.append(CrossMoments(count: h.fit, meanX: moments[k].mean, meanY: moments[k + 1].mean, comoment: c))
        }
        guard crosses.count == sites.count - 1 else { throw corrupt("shard_transitions has \(crosses.count) rows; expected \(sites.count - 1)") }

        func traces(_ table: String) throws(StoreError) -> [(id: String, output: Int?, vector: [Float])] {
            var out: [(String, Int?, [Float])] = []
            let rows = try db.prepare("SELECT trace_id, output, vector FROM \(table) ORDER BY row")
            while try rows.step() {
                let v = Blob.float32Values(rows.blob(2))
                guard rows.blob(2).count == 4 * layout.totalWidth, v.allSatisfy(\.isFinite) else {
                    throw corrupt("\(table) row \(out.count): expected \(layout.totalWidth) finite float32 values")
                }
                out.append((rows.text(0), rows.optionalInt(1).map { Int($0) }, v))
            }
            return out
        }
        var sample = HashSample(capacity: h.capacity)
        let sampled = try traces("shard_sample")
        guard sampled.count <= h.capacity, sampled.count <= h.fit else {
            throw corrupt("shard_sample has \(sampled.count) rows; expected at most sample_capacity (\(h.capacity)) and fit_count (\(h.fit))")
        }
        for item in sampled { sample.add(id: item.id, output: item.output, vector: item.vector) }
        let calibration = try traces("shard_calibration").map { item in
            var offset = 0
            return Trace(id: item.id, output: item.output, sites: sites.map { site in
                defer { offset += site.width }
                return item.vector[offset..<offset + site.width].map(Double.init)
            })
        }
        guard calibration.count == h.calibration else { throw corrupt("shard_calibration has \(calibration.count) rows; moment_shard.calibration_count is \(h.calibration)") }
        return (h.name, MomentShard(layout: layout, calibrationFraction: h.fraction, alpha: h.alpha, moments: moments, crosses: crosses,
                                    outputs: outputMoments, sample: sample, calibration: calibration))
    }

    /// Merges the moment shard files `paths` (shards of one reference: the same sites, widths and
    /// calibration fraction, disjoint traces) into a new one at `path`, as reference `name` (default: the
    /// first one's) at the first one's alpha; returns it.
    package static func merge(_ paths: [String], into path: String, name: String?) throws(StoreError) -> (name: String, shard: MomentShard) {
        precondition(!paths.isEmpty)
        var (first, merged) = try read(at: paths[0])
        var seen = traceKeys(merged)
        for p in paths.dropFirst() {
            let (other, shard) = try read(at: p)
            guard merged.matches(shard) else {
                throw StoreError(.corrupt, "'\(p)': shard of '\(other)' differs from '\(first)' of '\(paths[0])' in its sites, widths or calibration fraction; only shards of one reference merge")
            }
            guard merged.fitCount + shard.fitCount <= maximumCount, merged.calibration.count + shard.calibration.count <= maximumCount else {
                throw StoreError(.corrupt, "'\(p)': the merged shard would count more than \(maximumCount) traces")
            }
            let keys = traceKeys(shard)
            if let twice = keys.first(where: seen.contains) {
                throw StoreError(.corrupt, "'\(p)' holds trace '\(twice.id)' (same id and values) that an earlier shard holds too; shards must hold disjoint traces (a shard merged twice would count its traces twice)")
            }
            seen.formUnion(keys)
            merged.merge(shard)
        }
        try write(merged, name: name ?? first, to: path)
        return (name ?? first, merged)
    }

    /// A shard's calibration and sampled traces, by id and values: two shards of disjoint traces share none.
    private static func traceKeys(_ shard: MomentShard) -> Set<TraceKey> {
        Set(shard.calibration.map { TraceKey(id: $0.id, values: $0.sites.flatMap { $0 }) }
            + shard.sample.items.map { TraceKey(id: $0.id, values: $0.vector.map(Double.init)) })
    }

    private struct TraceKey: Hashable {
        var id: String
        var values: [Double]
    }

    /// The lower triangle of a `width × width` column-major matrix, column by column.
    static func packed(_ matrix: [Double], width: Int) -> [Double] {
        var out: [Double] = []
        out.reserveCapacity(width * (width + 1) / 2)
        for j in 0..<width { out.append(contentsOf: matrix[j * width + j..<(j + 1) * width]) }
        return out
    }

    /// The `width × width` column-major matrix whose lower triangle is `packed` (upper triangle zero).
    static func unpacked(_ packed: [Double], width: Int) -> [Double] {
        var out = [Double](repeating: 0, count: width * width), k = 0
        for j in 0..<width {
            for i in j..<width {
                out[j * width + i] = packed[k]
                k += 1
            }
        }
        return out
    }
}
