import LifeboatStore
import Foundation
import GRDB
import Hummingbird
import HummingbirdBcrypt
import LifeboatControl
import LifeboatIO

/// Credentials: bcrypt passwords, session cookies, API tokens, task tokens. Secrets are
/// stored only as SHA-256 (tokens, session IDs) or bcrypt (passwords); task tokens are kept
/// in clear because the boot menu must hand them to the PC, and they die with their task.
final class Authenticator: Sendable {
    static let sessionCookie = "lifeboat_session"
    static let loginCookie = "lifeboat_login"
    let db: DatabasePool
    let limiter = LoginLimiter()
    let sessionHours: Int

    init(db: DatabasePool, sessionHours: Int) {
        self.db = db
        self.sessionHours = sessionHours
    }

    static func digest(_ s: String) -> String { sha256Hex(Array(s.utf8)) }

    static func newSecret(_ prefix: String) -> String { prefix + randomHex(32) }

    /// Bcrypt is slow on purpose; it runs off the request threads.
    static func hashPassword(_ password: String) async -> String {
        await Blocking.run { Bcrypt.hash(password, cost: 12) }
    }

    static func verifyPassword(_ password: String, hash: String) async -> Bool {
        await Blocking.run { Bcrypt.verify(password, hash: hash) }
    }

    func identify(_ request: Request, address: String) async throws -> Principal? {
        if let auth = request.headers[.authorization] {
            guard auth.hasPrefix("Bearer ") else {
                throw Fail(.unauthorized, "Authorization must be \"Bearer <token>\", found another scheme")
            }
            let token = String(auth.dropFirst(7)).trimmingCharacters(in: .whitespaces)
            if token.hasPrefix("lbk_") {
                let task = try await db.read { db in
                    try TaskRecord.filter(Column("token") == token).fetchOne(db)
                }
                guard let task, task.state.isActive else {
                    throw Fail(.unauthorized, "task token unknown or its task has ended")
                }
                return .agent(task)
            }
            let id = Self.digest(token)
            let user = try await db.write { db -> AuthUser? in
                guard var t = try TokenRecord.fetchOne(db, key: id),
                      let u = try UserRecord.fetchOne(db, key: t.userID) else { return nil }
                t.lastUsed = Date()
                try t.update(db)
                return AuthUser(id: u.id!, name: u.name, role: u.role)
            }
            guard let user else { throw Fail(.unauthorized, "API token unknown or revoked") }
            return .user(user, session: nil)
        }
        if let cookie = request.cookies[Self.sessionCookie]?.value {
            let id = Self.digest(cookie)
            let found = try await db.read { db -> (SessionRecord, UserRecord)? in
                guard let s = try SessionRecord.fetchOne(db, key: id), s.expires > Date(),
                      let u = try UserRecord.fetchOne(db, key: s.userID) else { return nil }
                return (s, u)
            }
            if let (s, u) = found { return .user(AuthUser(id: u.id!, name: u.name, role: u.role), session: s) }
        }
        return nil
    }

    /// Checks a name and password, rate limited per address and name. Returns the user.
    func login(name: String, password: String, address: String) async throws -> UserRecord {
        let key = address + "|" + name.lowercased()
        if let wait = limiter.blockedFor(key) {
            throw Fail(.tooManyRequests, "too many failed logins for \(name.prefix(64)) from \(address); try again in \(wait) s")
        }
        let user = try await db.read { db in
            try UserRecord.filter(Column("name") == name).fetchOne(db)
        }
        // Verify against a fixed hash when the user is unknown, so timing does not tell.
        let ok = await Self.verifyPassword(password, hash: user?.passwordHash ?? Self.dummyHash)
        guard let user, ok else {
            limiter.fail(key)
            throw Fail(.unauthorized, "wrong user name or password")
        }
        limiter.reset(key)
        return user
    }

    private static let dummyHash = Bcrypt.hash("not a password", cost: 12)

    /// Makes a session; returns the cookie value.
    func startSession(user: UserRecord, address: String) async throws -> (cookie: String, csrf: String) {
        let cookie = randomHex(32)
        let csrf = randomHex(16)
        let record = SessionRecord(id: Self.digest(cookie), userID: user.id!, csrf: csrf, created: Date(),
                                   expires: Date().addingTimeInterval(Double(sessionHours) * 3600), address: address)
        try await db.write { db in
            try SessionRecord.filter(Column("expires") < Date()).deleteAll(db)
            try record.insert(db)
        }
        return (cookie, csrf)
    }

    func endSession(_ session: SessionRecord) async throws {
        _ = try await db.write { db in try SessionRecord.deleteOne(db, key: session.id) }
    }
}

/// Login failures per key in a sliding window: 5 in 5 minutes blocks the key until the
/// oldest failure leaves the window.
final class LoginLimiter: @unchecked Sendable {
    static let limit = 5
    static let window: Double = 300
    private let lock = Mutex()
    private var failures: [String: [Double]] = [:]

    private func now() -> Double { Date().timeIntervalSince1970 }

    func blockedFor(_ key: String) -> Int? {
        lock.withLock {
            let t = now()
            let recent = (failures[key] ?? []).filter { t - $0 < Self.window }
            failures[key] = recent.isEmpty ? nil : recent
            guard recent.count >= Self.limit, let first = recent.first else { return nil }
            return max(1, Int(Self.window - (t - first)))
        }
    }

    func fail(_ key: String) {
        lock.withLock {
            if failures.count > 100_000 { failures.removeAll() }  // bounded memory under a flood
            failures[key, default: []].append(now())
        }
    }

    func reset(_ key: String) { _ = lock.withLock { failures.removeValue(forKey: key) } }
}

/// Runs blocking work (bcrypt, store I/O, fsync) on Dispatch threads so the few Swift
/// concurrency threads stay free to answer requests.
enum Blocking {
    private static let queue = DispatchQueue(label: "lifeboat.blocking", attributes: .concurrent)

    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { c in
            queue.async { c.resume(with: Result { try body() }) }
        }
    }

    static func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { c in
            queue.async { c.resume(returning: body()) }
        }
    }
}
