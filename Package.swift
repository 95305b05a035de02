// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "MechWatch",
    products: [
        .executable(name: "mechwatch", targets: ["mechwatch"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
    ],
    targets: [
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev", "liblapacke-dev"])]),
        // glibc's malloc_trim: the daemon hands freed heap back to the system after large one-off work.
        .systemLibrary(name: "CMalloc"),
        // Math core: statistics, estimators, scorers, calibration. No I/O.
        .target(name: "MechWatchCore", dependencies: ["COpenBLAS"]),
        // SQLite store: migrations, references, fit traces, events.
        .target(name: "MechWatchStore", dependencies: ["CSQLite", "MechWatchCore", .product(name: "Crypto", package: "swift-crypto")],
                plugins: ["EmbedMigrations"]),
        .executableTarget(name: "migration-embedder"),
        .plugin(name: "EmbedMigrations", capability: .buildTool(), dependencies: ["migration-embedder"]),
        // Wire protocol v1: line framing and the JSON codec. No sockets.
        .target(name: "MechWatchWire", dependencies: [
            "MechWatchCore",
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        // A protocol-v1 client over the daemon's socket (the CLI's and the tests').
        .target(name: "MechWatchClient", dependencies: [
            "MechWatchWire",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        // The daemon: config, engine, Unix-socket server, lifecycle.
        .target(name: "MechWatchServer", dependencies: [
            "MechWatchCore", "MechWatchStore", "MechWatchWire", "CMalloc",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "TOMLKit", package: "TOMLKit"),
        ]),
        // Command-line interface: every subcommand of `mechwatch`.
        .target(name: "MechWatchCLI", dependencies: [
            "MechWatchCore", "MechWatchStore", "MechWatchWire", "MechWatchServer", "MechWatchClient", "COpenBLAS",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "mechwatch", dependencies: ["MechWatchCLI"]),
        .testTarget(name: "MechWatchCoreTests", dependencies: ["MechWatchCore"], resources: [.copy("Fixtures")]),
        .testTarget(name: "MechWatchStoreTests", dependencies: ["MechWatchStore", "MechWatchCore"]),
        .testTarget(name: "MechWatchWireTests", dependencies: [
            "MechWatchWire", "MechWatchCore",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
        ]),
        .testTarget(name: "MechWatchServerTests", dependencies: [
            "MechWatchServer", "MechWatchClient", "MechWatchCLI", "MechWatchStore", "MechWatchWire", "MechWatchCore", "CSQLite",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
    ]
)
