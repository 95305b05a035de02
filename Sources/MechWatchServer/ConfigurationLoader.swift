import Foundation
import TOMLKit

extension Configuration {
    /// The config file used when none is named: `$MECHWATCH_CONFIG`, else `Config/mechwatch.toml` in the
    /// working directory if it exists, else none (built-in defaults, which equal that file's).
    package static func defaultPath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        if let path = environment["MECHWATCH_CONFIG"], !path.isEmpty { return path }
        let local = "Config/mechwatch.toml"
        return FileManager.default.fileExists(atPath: local) ? local : nil
    }

    /// Defaults overlaid with the keys of the TOML file at `path` (if any).
    package static func load(path: String?) throws(ConfigurationError) -> Configuration {
        var config = Configuration()
        guard let path else { return config }
        let text: String
        guard FileManager.default.fileExists(atPath: path) else { throw .unreadable(path: path, reason: "no such file") }
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw .unreadable(path: path, reason: error.localizedDescription)
        }
        try config.apply(toml: text, path: path)
        return config
    }

    /// Overlays the keys of a TOML document.
    package mutating func apply(toml text: String, path: String) throws(ConfigurationError) {
        let table: TOMLTable
        do { table = try TOMLTable(string: text) } catch let error as TOMLParseError {
            throw .syntax(path: path, line: error.source.begin.line, column: error.source.begin.column, reason: error.description)
        } catch {
            throw .unreadable(path: path, reason: "\(error)")
        }
        for (key, value) in table {
            let converted: ConfigValue
            if let s = value.string { converted = .string(s) }
            else if let n = value.int { converted = .integer(n) }
            else if let d = value.double { converted = .double(d) }
            else if let b = value.bool { converted = .bool(b) }
            else if let a = value.array, case let ints = a.compactMap({ $0.int }), ints.count == a.count { converted = .integers(ints) }
            else { throw .invalidValue(key: key, value: "a \(value.type)", accepts: Self.keys.first { $0.key == key }?.accepts ?? "a scalar") }
            try set(key, converted)
        }
    }
}
