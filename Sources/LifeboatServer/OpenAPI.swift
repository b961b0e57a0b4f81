import Foundation

/// The OpenAPI 3.1 description served at /api/v1/openapi.json, built from the route table
/// so that it cannot list a route that does not exist or miss one that does. Bodies are
/// described in docs/api.md; here each operation names its security scheme.
enum OpenAPI {
    static func document(_ entries: [RouteTable.Entry]) -> String {
        var paths: [String: [String: Any]] = [:]
        for e in entries where e.path.hasPrefix("/api/") {
            // "/api/v1/hosts/:host" → "/api/v1/hosts/{host}"
            let path = e.path.split(separator: "/", omittingEmptySubsequences: false).map {
                $0.hasPrefix(":") ? "{\($0.dropFirst())}" : String($0)
            }.joined(separator: "/")
            var op: [String: Any] = ["summary": "\(e.method.rawValue) \(path) (docs/api.md)",
                                     "responses": ["default": ["description": "JSON; errors are {\"error\": \"…\"}"]]]
            switch e.access {
            case .open: op["security"] = [] as [Any]
            case .agent: op["security"] = [["taskToken": [] as [Any]]]
            case .user(let role):
                op["security"] = [["apiToken": [] as [Any]], ["session": [] as [Any]]]
                op["x-lifeboat-role"] = role.rawValue
            }
            let params = path.split(separator: "/").filter { $0.hasPrefix("{") }.map {
                ["name": String($0.dropFirst().dropLast()), "in": "path", "required": true, "schema": ["type": "string"]] as [String: Any]
            }
            if !params.isEmpty { op["parameters"] = params }
            paths[path, default: [:]][e.method.rawValue.lowercased()] = op
        }
        let doc: [String: Any] = [
            "openapi": "3.1.0",
            "info": ["title": "Lifeboat API", "version": "1"],
            "paths": paths,
            "components": ["securitySchemes": [
                "apiToken": ["type": "http", "scheme": "bearer", "description": "lbt_… from `lifeboat tokens create`"],
                "taskToken": ["type": "http", "scheme": "bearer", "description": "lbk_… made for one task"],
                "session": ["type": "apiKey", "in": "cookie", "name": Authenticator.sessionCookie],
            ]],
        ]
        let data = (try? JSONSerialization.data(withJSONObject: doc, options: [.sortedKeys, .prettyPrinted])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
