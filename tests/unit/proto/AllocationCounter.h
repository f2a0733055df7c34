// Counts heap allocations made through operator new while a scope is open.
// AllocationCounter.cpp replaces the global operator new and delete for the
// whole unit test binary; they only count while an AllocationScope lives.
#pragma once

#include <cstddef>

namespace wsgate::test {

struct AllocationStats {
    std::size_t count = 0;   ///< Calls to operator new.
    std::size_t bytes = 0;   ///< Bytes they asked for.
    std::size_t largest = 0; ///< The largest single request.
};

/// Counts allocations from construction until stats() is read or the scope
/// ends. Scopes do not nest. Single-threaded, like the tests that use it.
class AllocationScope {
public:
    AllocationScope() noexcept;
    ~AllocationScope();
    AllocationScope(const AllocationScope&) = delete;
    AllocationScope& operator=(const AllocationScope&) = delete;

    /// What was counted so far.
    AllocationStats stats() const noexcept;
};

} // namespace wsgate::test
