import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An exclusive lock on one shard of a batch folder: a hidden lock file in the folder
/// (`.darkroom.lock`, or `.darkroom.K-of-N.lock` for a shard) locked with `flock` and holding
/// the holder's pid and host. A second process for the same folder and shard is refused with a
/// message naming the holder. The kernel drops the lock when the holder exits, even by
/// `kill -9`, so a stale file never blocks a rerun; the holder removes the file when done.
public final class FolderLock: @unchecked Sendable {
    public let url: URL
    private var fd: Int32

    public static func fileName(for shard: Shard) -> String {
        shard.count == 1 ? ".darkroom.lock" : ".darkroom.\(shard.index)-of-\(shard.count).lock"
    }

    public init(folder: URL, shard: Shard = .all) throws {
        url = folder.appendingPathComponent(Self.fileName(for: shard))
        let path = url.path
        while true {
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw DarkroomError.io(path: path, reason: "cannot create the lock file: \(String(cString: strerror(errno)))") }
            if flock(fd, LOCK_EX | LOCK_NB) != 0 {
                let err = errno
                let holder = Self.holder(fd)
                close(fd)
                guard err == EWOULDBLOCK else { throw DarkroomError.io(path: path, reason: "cannot lock: \(String(cString: strerror(err)))") }
                let who = holder.map { "darkroom process \($0)" } ?? "darkroom process"
                throw DarkroomError.io(path: folder.path, reason: "another \(who) is writing this batch (same folder\(shard.count > 1 ? " and shard \(shard)" : "")); wait for it to finish or stop it, then run again")
            }
            // The previous holder may have removed the file between our open and our lock: then
            // we hold a lock on a file nobody else will open. Start again with the current file.
            var mine = stat(), current = stat()
            if fstat(fd, &mine) == 0, stat(path, &current) == 0, mine.st_dev == current.st_dev, mine.st_ino == current.st_ino {
                let text = Array("\(getpid()) \(BatchRunner.hostTag)\n".utf8)
                _ = ftruncate(fd, 0)
                _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress!, text.count, 0) }
                self.fd = fd
                return
            }
            close(fd)
        }
    }

    /// "pid 1234 on host" from the lock file, when it says.
    static func holder(_ fd: Int32) -> String? {
        var buf = [UInt8](repeating: 0, count: 128)
        let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, 127, 0) }
        guard n > 0 else { return nil }
        let parts = String(decoding: buf[0..<n], as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard let pid = parts.first.flatMap({ Int32($0) }) else { return nil }
        return parts.count > 1 && parts[1] != Substring(BatchRunner.hostTag) ? "pid \(pid) on \(parts[1])" : "pid \(pid)"
    }

    /// Removes the lock file and drops the lock (also done on deinit).
    public func release() {
        guard fd >= 0 else { return }
        unlink(url.path)
        close(fd)
        fd = -1
    }

    deinit { release() }
}
