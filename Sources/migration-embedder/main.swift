// Writes a Swift file holding the SQL of each migration: `migration-embedder OUTPUT FILE.sql…`.
// Each file is named `NNN_description.sql`; NNN is its schema version.
import Foundation

let arguments = CommandLine.arguments.dropFirst()
guard let output = arguments.first else {
    FileHandle.standardError.write(Data("usage: migration-embedder OUTPUT FILE.sql...\n".utf8))
    exit(2)
}
var entries: [String] = []
for path in arguments.dropFirst() {
    let name = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
    guard let version = Int(name.prefix { $0.isNumber }), version > 0 else {
        FileHandle.standardError.write(Data("error: \(path): migration file names start with their version, e.g. 001_initial.sql\n".utf8))
        exit(1)
    }
    let sql = try String(contentsOfFile: path, encoding: .utf8)
    entries.append("    Migration(version: \(version), name: \(String(reflecting: name)), sql: \(String(reflecting: sql))),")
}
let source = """
// Generated from migrations/*.sql by the EmbedMigrations plugin. Do not edit.
let embeddedMigrations: [Migration] = [
\(entries.joined(separator: "\n"))
]

"""
try source.write(toFile: output, atomically: true, encoding: .utf8)
