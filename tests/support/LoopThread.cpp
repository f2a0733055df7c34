#include "support/LoopThread.h"

#include <uv.h>

#include <atomic>
#include <deque>
#include <doctest/doctest.h>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace wsgate::test {

struct LoopThread::Impl {
    std::thread thread;
    std::thread::id loopThreadId;
    std::unique_ptr<EventLoop> loop;
    // The wake-up of the loop from other threads; uv_async_send is the one
    // libuv call that is safe from any thread.
    uv_async_t async{};

    std::mutex mutex;
    std::deque<std::function<void()>> tasks;      // guarded by mutex
    std::vector<std::function<void()>> teardowns; // guarded by mutex
    bool asyncOpen = false;                       // guarded by mutex: async may be sent to
    bool forceStop = false;                       // guarded by mutex

    std::promise<void> ready;
    std::promise<int> ranDry; // EventLoop::run()'s result
    std::string leftovers;    // handles alive when the loop was forced to stop
    bool finished = false;
    bool finishResult = true;
    int fdsBefore = 0;

    void threadMain();
    void drainTasks();
    static void onAsync(uv_async_t* handle);
    void wake();
};

namespace {

/// Descriptors open in this process: the loop's own and every socket the
/// test's servers adopted must be closed by the time the loop is gone.
int countOpenFds() {
    int n = 0;
    if (DIR* dir = opendir("/proc/self/fd")) {
        while (const dirent* entry = readdir(dir)) {
            n += entry->d_name[0] != '.' ? 1 : 0;
        }
        closedir(dir);
        --n; // the directory stream's own
    }
    return n;
}

void describeHandle(uv_handle_t* handle, void* arg) {
    auto* out = static_cast<std::string*>(arg);
    if (uv_is_closing(handle) != 0) {
        return;
    }
    *out += std::string(uv_handle_type_name(uv_handle_get_type(handle)));
    *out += uv_is_active(handle) != 0 ? " (active" : " (inactive";
    *out += uv_has_ref(handle) != 0 ? ", referenced) " : ", unreferenced) ";
}

} // namespace

void LoopThread::Impl::threadMain() {
    loopThreadId = std::this_thread::get_id();
    loop = std::make_unique<EventLoop>();
    auto* uv = static_cast<uv_loop_t*>(loop->nativeHandle());
    uv_async_init(uv, &async, &Impl::onAsync);
    async.data = this;
    {
        std::lock_guard lock(mutex);
        asyncOpen = true;
    }
    ready.set_value();

    const int rc = loop->run();
    {
        std::lock_guard lock(mutex);
        asyncOpen = false;
    }
    ranDry.set_value(rc);
    uv_close(reinterpret_cast<uv_handle_t*>(&async), nullptr);
    loop->run();
    // Tasks posted after finish() have nothing left to act on.
    {
        std::lock_guard lock(mutex);
        tasks.clear();
    }
    loop.reset();
}

void LoopThread::Impl::onAsync(uv_async_t* handle) {
    auto* self = static_cast<Impl*>(handle->data);
    self->drainTasks();
    bool force = false;
    {
        std::lock_guard lock(self->mutex);
        force = self->forceStop;
    }
    if (force) {
        uv_walk(handle->loop, &describeHandle, &self->leftovers);
        self->loop->stop();
    }
}

void LoopThread::Impl::drainTasks() {
    for (;;) {
        std::deque<std::function<void()>> batch;
        {
            std::lock_guard lock(mutex);
            batch.swap(tasks);
        }
        if (batch.empty()) {
            return;
        }
        for (auto& task : batch) {
            task();
        }
    }
}

void LoopThread::Impl::wake() {
    std::lock_guard lock(mutex);
    if (asyncOpen) {
        uv_async_send(&async);
    }
}

LoopThread::LoopThread() : impl_(std::make_unique<Impl>()) {
    // libuv opens a process-wide pipe for signals with the first loop and
    // keeps it; open it before counting, so that it is not taken for a leak.
    static std::once_flag libuvGlobals;
    std::call_once(libuvGlobals, [] {
        uv_loop_t loop;
        uv_loop_init(&loop);
        uv_loop_close(&loop);
    });
    impl_->fdsBefore = countOpenFds();
    auto ready = impl_->ready.get_future();
    impl_->thread = std::thread([impl = impl_.get()] { impl->threadMain(); });
    ready.wait();
}

LoopThread::~LoopThread() {
    finish();
}

bool LoopThread::post(std::function<void()> task) {
    {
        std::lock_guard lock(impl_->mutex);
        if (!impl_->asyncOpen) {
            FAIL_CHECK("LoopThread::post after the loop finished");
            return false;
        }
        impl_->tasks.push_back(std::move(task));
    }
    impl_->wake();
    return true;
}

bool LoopThread::waitUntil(const std::function<bool()>& predicate,
                           std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (call([&] { return predicate(); })) {
            return true;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
}

EventLoop& LoopThread::loop() noexcept {
    return *impl_->loop;
}

bool LoopThread::onLoopThread() const noexcept {
    return std::this_thread::get_id() == impl_->loopThreadId;
}

void LoopThread::addTeardown(std::function<void()> teardown) {
    std::lock_guard lock(impl_->mutex);
    impl_->teardowns.push_back(std::move(teardown));
}

bool LoopThread::finish(std::chrono::milliseconds timeout) {
    Impl& impl = *impl_;
    if (impl.finished) {
        return impl.finishResult;
    }
    impl.finished = true;
    auto ranDry = impl.ranDry.get_future();
    post([&impl] {
        std::vector<std::function<void()>> teardowns;
        {
            std::lock_guard lock(impl.mutex);
            teardowns.swap(impl.teardowns);
        }
        for (auto it = teardowns.rbegin(); it != teardowns.rend(); ++it) {
            (*it)();
        }
        // From here on only the test's own objects can keep the loop alive.
        uv_unref(reinterpret_cast<uv_handle_t*>(&impl.async));
    });
    bool dry = ranDry.wait_for(timeout) == std::future_status::ready;
    if (!dry) {
        {
            std::lock_guard lock(impl.mutex);
            impl.forceStop = true;
        }
        impl.wake();
        if (ranDry.wait_for(callTimeout) != std::future_status::ready) {
            std::fprintf(stderr, "LoopThread: the loop did not stop\n");
            std::abort();
        }
    }
    const int rc = ranDry.get();
    impl.thread.join();
    CHECK_MESSAGE(dry, "the loop did not run dry within ", timeout.count(),
                  " ms of the teardown; alive: ", impl.leftovers);
    CHECK_MESSAGE(rc == 0, "EventLoop::run() returned ", rc);
    bool fdsClosed = true;
    if (dry) {
        // Tests close their own sockets before the loop goes, so any
        // difference is a descriptor that the library left open.
        const int fdsAfter = countOpenFds();
        fdsClosed = fdsAfter == impl.fdsBefore;
        CHECK_MESSAGE(fdsClosed, "open descriptors: ", impl.fdsBefore, " before the loop, ",
                      fdsAfter, " after it");
    }
    impl.finishResult = dry && rc == 0 && fdsClosed;
    return impl.finishResult;
}

} // namespace wsgate::test
