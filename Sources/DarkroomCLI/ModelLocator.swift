import Darkroom
import Foundation

/// Finds the model folder: --model, then $DARKROOM_MODEL, then the default model under `Models/`
/// (searched upwards from the executable, then from the source checkout it was built from).
enum ModelLocator {
    /// The folder name of the model shipped in Models/.
    static let defaultModelName = "darkroom-emoji"

    static func resolve(_ explicit: String?) -> URL {
        if let explicit { return URL(fileURLWithPath: explicit) }
        if let env = ProcessInfo.processInfo.environment["DARKROOM_MODEL"], !env.isEmpty {
            return URL(fileURLWithPath: env)
        }
        var candidates: [URL] = []
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<6 {
            candidates.append(dir.appendingPathComponent("Models").appendingPathComponent(defaultModelName))
            dir = dir.deletingLastPathComponent()
        }
        // Sources/DarkroomCLI/ModelLocator.swift → repository root.
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        candidates.append(repo.appendingPathComponent("Models").appendingPathComponent(defaultModelName))
        candidates.append(URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent("Models").appendingPathComponent(defaultModelName))
        return candidates.first { FileManager.default.fileExists(atPath: $0.appendingPathComponent("model_index.json").path) }
            ?? candidates.last!
    }
}
