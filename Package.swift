// swift-tools-version:6.1
import PackageDescription

// Layers, lowest first (DESIGN.md §2). A target imports only layers below it.
let package = Package(
    name: "Lifeboat",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "lifeboat", targets: ["lifeboat"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.0.0"),
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
        // 3. Engines: backup, restore, verify.
        .target(name: "LifeboatEngine", dependencies: ["LifeboatFormats", "LifeboatIO", "LifeboatStore"]),
        // 5. Programs.
        .executableTarget(name: "lifeboat", dependencies: [
            "LifeboatEngine",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "LifeboatFormatsTests", dependencies: ["LifeboatFormats"]),
        .testTarget(name: "LifeboatStoreTests", dependencies: ["LifeboatStore"]),
        .testTarget(name: "LifeboatEngineTests", dependencies: ["LifeboatEngine", "LifeboatStore", "LifeboatIO", "LifeboatFormats"]),
    ]
)
