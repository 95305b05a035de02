import Foundation
@testable import MechWatchCLI
import MechWatchServer
import MechWatchStore
import MechWatchWire
import Testing

/// What the CLI prints stays readable at the edges of Double.
@Suite struct FormatTests {
    @Test func hugeAndTinyValuesPrintWithoutTrapping() {
        #expect(Format.fixed(5e299, 2) == "5e+299")
        #expect(Format.fixed(-1e20, 2) == "-1e+20")
        #expect(Format.fixed(.infinity, 2) == "inf")
        #expect(Format.fixed(1.005, 2) == "1.00" || Format.fixed(1.005, 2) == "1.01")
        #expect(Format.p(0.00099999) == "1.00e-3")
        #expect(Format.p(1e-300) == "1.00e-300")
    }
}
