import XCTest
@testable import Darkroom

final class SmokeTests: XCTestCase {
    func testLinks() { XCTAssertGreaterThan(Threads.count, 0) }
}
