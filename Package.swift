// swift-tools-version:6.1
import PackageDescription

// Layers, lowest first (DESIGN.md §2). A target imports only layers below it.
let package = Package(
    name: "Lifeboat",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "lifeboat", targets: ["lifeboat"]),
        // What the rescue initramfs runs (docs/rescue.md); linked fully static, so it must
        // never depend on LifeboatServer (Hummingbird, GRDB) or Foundation.
        .executable(name: "lifeboat-agent", targets: ["lifeboat-agent"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth.git", from: "2.5.0"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
    ],
    targets: [
        // 1. Formats: pure parsers over a BlockSource; no I/O of their own.
        .target(name: "LifeboatFormats"),
        // Syscalls behind one thin typed wrapper.
        .target(name: "LifeboatIO", dependencies: ["LifeboatFormats"]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        // 2. Store: content-addressed chunks in pack files, image manifests.
        .target(name: "LifeboatStore", dependencies: [
            "LifeboatIO", "CZstd",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // 3. Engines: backup, restore, verify, multicast (HMAC-SHA256 on its packets).
        .target(name: "LifeboatEngine", dependencies: [
            "LifeboatFormats", "LifeboatIO", "LifeboatStore",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Control-plane values shared by server, agent and CLI: API bodies, validation,
        // the task state machine, schedules, CSV, Wake-on-LAN. Pure, no I/O but WakeOnLAN.send.
        .target(name: "LifeboatControl"),
        // Client side of the HTTP API: a small blocking HTTP/1.1 client (no Foundation
        // networking, so the agent can be linked statically), the REST client, the agent.
        .target(name: "LifeboatClient", dependencies: ["LifeboatEngine", "LifeboatStore", "LifeboatIO", "LifeboatControl"]),
        // 4. Services: network boot (ProxyDHCP/DHCP, TFTP) on POSIX sockets, as Services.
        .target(name: "LifeboatBoot", dependencies: [
            "LifeboatFormats", "LifeboatIO",
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // 4. Services: the server (database, HTTP app, web UI, agent API, scheduler).
        .target(name: "LifeboatServer", dependencies: [
            "LifeboatEngine", "LifeboatControl", "LifeboatBoot",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
            .product(name: "Mustache", package: "swift-mustache"),
            .product(name: "GRDB", package: "GRDB.swift"),
        ]),
        // 5. Programs.
        .executableTarget(name: "lifeboat", dependencies: [
            "LifeboatEngine", "LifeboatControl", "LifeboatClient", "LifeboatServer", "LifeboatBoot",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "lifeboat-agent", dependencies: [
            "LifeboatClient", "LifeboatEngine",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Test-only: the boot services alone, for network tests and bench/tftp.sh in a netns.
        .executableTarget(name: "lifeboat-boot-test-server", dependencies: [
            "LifeboatBoot", "LifeboatFormats", "LifeboatIO",
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "LifeboatFormatsTests", dependencies: ["LifeboatFormats"]),
        .testTarget(name: "LifeboatStoreTests", dependencies: ["LifeboatStore"]),
        .testTarget(name: "LifeboatBootTests", dependencies: ["LifeboatBoot", "LifeboatFormats", "LifeboatIO"]),
        .testTarget(name: "LifeboatEngineTests", dependencies: ["LifeboatEngine", "LifeboatStore", "LifeboatIO", "LifeboatFormats"]),
        // Helpers shared by test targets (a UDP receiver for Wake-on-LAN packets).
        .target(name: "TestKit", path: "Tests/TestKit"),
        .testTarget(name: "LifeboatControlTests", dependencies: ["LifeboatControl", "TestKit"]),
        .testTarget(name: "LifeboatClientTests", dependencies: [
            "LifeboatClient", "LifeboatControl", "LifeboatEngine", "LifeboatStore", "LifeboatIO",
        ]),
        .testTarget(name: "LifeboatServerTests", dependencies: [
            "LifeboatServer", "LifeboatClient", "LifeboatControl", "LifeboatEngine", "LifeboatStore", "LifeboatIO", "TestKit",
            .product(name: "GRDB", package: "GRDB.swift"),
        ]),
    ]
)
