#include "net/DeadlineQueue.h"

#include <cassert>

namespace wsgate::net {

void DeadlineEntry::unlink() noexcept {
    if (next_ == nullptr) {
        return;
    }
    prev_->next_ = next_;
    next_->prev_ = prev_;
    prev_ = nullptr;
    next_ = nullptr;
}

DeadlineQueue::DeadlineQueue(uv_loop_t* loop, ExpireCallback expire, void* context)
    : expire_(expire), context_(context) {
    head_.prev_ = &head_;
    head_.next_ = &head_;
    int rc = uv_timer_init(loop, &timer_);
    assert(rc == 0);
    (void)rc;
    timer_.data = this;
    // The timer alone must not keep the loop running.
    uv_unref(reinterpret_cast<uv_handle_t*>(&timer_));
}

void DeadlineQueue::add(DeadlineEntry& entry, std::uint64_t timeoutMs) {
    entry.unlink();
    std::uint64_t now = uv_now(timer_.loop);
    entry.deadline_ = timeoutMs > UINT64_MAX - now ? UINT64_MAX : now + timeoutMs;
    DeadlineEntry* after = head_.prev_;
    while (after != &head_ && after->deadline_ > entry.deadline_) {
        after = after->prev_;
    }
    entry.prev_ = after;
    entry.next_ = after->next_;
    after->next_->prev_ = &entry;
    after->next_ = &entry;
    if (entry.prev_ == &head_) {
        arm();
    }
}

void DeadlineQueue::arm() {
    if (empty()) {
        uv_timer_stop(&timer_);
        armedFor_ = 0;
        return;
    }
    std::uint64_t deadline = head_.next_->deadline_;
    if (deadline == UINT64_MAX) {
        uv_timer_stop(&timer_);
        armedFor_ = 0;
        return;
    }
    if (uv_is_active(reinterpret_cast<uv_handle_t*>(&timer_)) && armedFor_ == deadline) {
        return;
    }
    std::uint64_t now = uv_now(timer_.loop);
    armedFor_ = deadline;
    uv_timer_start(&timer_, onTimer, deadline > now ? deadline - now : 0, 0);
}

void DeadlineQueue::onTimer(uv_timer_t* timer) {
    auto* self = static_cast<DeadlineQueue*>(timer->data);
    self->armedFor_ = 0;
    std::uint64_t now = uv_now(timer->loop);
    // An expire callback may link or unlink any entry, so take the head anew
    // each time.
    while (!self->empty() && self->head_.next_->deadline_ <= now) {
        DeadlineEntry& entry = *self->head_.next_;
        entry.unlink();
        self->expire_(entry, self->context_);
    }
    self->arm();
}

void DeadlineQueue::close(uv_close_cb onClosed) {
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), onClosed);
}

} // namespace wsgate::net
