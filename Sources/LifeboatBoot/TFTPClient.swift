import LifeboatFormats
import LifeboatIO

/// A minimal RFC 1350 reader (512-byte lock-step, no options), for `lifeboat doctor` to
/// fetch a boot file from our own server the way the simplest PXE client would.
public enum TFTPClient {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public static func get(_ file: String, from server: IPv4Address, port: UInt16 = 69, timeoutMilliseconds: Int32 = 3000,
                           limit: Int = 64 << 20) throws -> [UInt8] {
        let socket = try UDPSocket(port: 0)
        guard socket.send(TFTPPacket.readRequest(filename: file, mode: .octet, options: []).serialize(), to: server, port: port) else {
            throw Failure(description: "cannot send a read request to \(server):\(port)")
        }
        var out: [UInt8] = []
        var expected: UInt16 = 1
        var buffer = [UInt8](repeating: 0, count: 2048)
        while true {
            guard pollReadable([socket.fd], timeoutMilliseconds: timeoutMilliseconds).first == true else {
                throw Failure(description: "no answer from \(server):\(port) within \(timeoutMilliseconds) ms (block \(expected))")
            }
            guard let got = buffer.withUnsafeMutableBytes({ socket.receive(into: $0) }) else { continue }
            switch try TFTPPacket.parse(Array(buffer[0 ..< got.count])) {
            case .data(let block, let data) where block == expected:
                out += data
                guard out.count <= limit else { throw Failure(description: "\(file) is larger than \(limit) bytes") }
                _ = socket.send(TFTPPacket.ack(block: block).serialize(), to: got.address, port: got.port)
                if data.count < 512 { return out }
                expected &+= 1
            case .data:
                continue  // a duplicate of an earlier block
            case .error(let code, let message):
                throw Failure(description: "\(server) answered TFTP error \(code): \(message)")
            default:
                throw Failure(description: "\(server) answered with an unexpected packet")
            }
        }
    }
}
