/*
 * Not Aeron: a stand-in with the signatures of the aeron_mpsc_rb functions
 * that benches/aeron/ffi.rs declares, so that CI can type-check and link the
 * peer bench's Aeron row without Aeron (build.rs compiles it when
 * AERON_RB_STUB is set). Every call fails; the bench skips the row when it
 * was built against this stub.
 */
#include <stddef.h>
#include <stdint.h>

typedef void (*handler_t)(int32_t, const void *, size_t, void *);

int aeron_mpsc_rb_init(void *ring_buffer, void *buffer, size_t length)
{
    (void)ring_buffer; (void)buffer; (void)length;
    return -1;
}

int aeron_mpsc_rb_write(void *ring_buffer, int32_t msg_type_id, const void *msg, size_t length)
{
    (void)ring_buffer; (void)msg_type_id; (void)msg; (void)length;
    return -2;
}

int32_t aeron_mpsc_rb_try_claim(void *ring_buffer, int32_t msg_type_id, size_t length)
{
    (void)ring_buffer; (void)msg_type_id; (void)length;
    return -2;
}

int aeron_mpsc_rb_commit(void *ring_buffer, int32_t offset)
{
    (void)ring_buffer; (void)offset;
    return -1;
}

size_t aeron_mpsc_rb_read(void *ring_buffer, handler_t handler, void *clientd, size_t message_count_limit)
{
    (void)ring_buffer; (void)handler; (void)clientd; (void)message_count_limit;
    return 0;
}
