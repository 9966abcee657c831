/* Port I/O and MMIO dispatch: the port space, the I/O window's translation slots
 * and register accesses routed to the owning device's callback. */
#include "internal.h"

int dmamap_port_access(dmamap_machine *m, uint64_t port, int size, int is_write, uint64_t *value,
                       struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, port, "machine is closed");
    if (!value)
        return dmamap_fail(err, DMAMAP_EINVAL, port, "NULL value");
    if (size != 1 && size != 2 && size != 4)
        return dmamap_fail(err, DMAMAP_EINVAL, port, "port access width %d is not 1, 2 or 4", size);
    if (port > 0xffff || port + (uint64_t)size > 0x10000)
        return dmamap_fail(err, DMAMAP_EIO, port, "port %#llx+%d outside the 64 KiB port space",
                           (unsigned long long)port, size);
    m->port_accesses++;
    int rc = m->io_fn ? m->io_fn(m->io_ctx, DMAMAP_IO_PORT, -1, -1, port, size, is_write, value) : DMAMAP_EIO;
    if (rc == DMAMAP_EIO) {
        /* PCI master abort: no device claims the cycle; a read returns all-ones, a write is dropped */
        m->port_master_aborts++;
        if (!is_write)
            *value = size == 4 ? 0xffffffffULL : size == 2 ? 0xffffULL : 0xffULL;
        rc = 0;
    } else if (rc)
        rc = dmamap_fail(err, rc, port, "port %#llx handler failed", (unsigned long long)port);
    return dmamap_m_done(m, rc, err);
}

int dmamap_iowin_map(dmamap_machine *m, uint64_t pa, uint64_t size, uint64_t port, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, pa, "machine is closed");
    struct dmamap_region reg, *r = dmamap_region_lookup(m, pa, &reg) ? &reg : NULL;
    if (!r || r->type != DMAMAP_MEM_IOWIN || size == 0 || size > r->size - (pa - r->base))
        return dmamap_fail(err, DMAMAP_EINVAL, pa, "%#llx+%#llx is not inside the I/O window",
                           (unsigned long long)pa, (unsigned long long)size);
    if (port + size > 0x10000 || port + size < port)
        return dmamap_fail(err, DMAMAP_EINVAL, port, "ports %#llx+%#llx outside the port space",
                           (unsigned long long)port, (unsigned long long)size);
    int rc = 0, slot = -1;
    LOCK(&m->lock);
    for (int i = 0; i < MAX_IOWIN; i++) {
        struct iowin_slot *s = &m->iowin[i];
        if (!s->live) {
            if (slot < 0)
                slot = i;
        } else if (pa < s->pa + s->size && s->pa < pa + size) {
            rc = dmamap_fail(err, DMAMAP_EBUSY, pa, "I/O window range %#llx already translated",
                             (unsigned long long)pa);
            goto out;
        }
    }
    if (slot < 0)
        rc = dmamap_fail(err, DMAMAP_EBUSY, pa, "all %d I/O window translation slots in use", MAX_IOWIN);
    else
        m->iowin[slot] = (struct iowin_slot){.pa = pa, .size = size, .port = port, .live = 1};
out:
    UNLOCK(&m->lock);
    return dmamap_m_done(m, rc, err);
}

int dmamap_iowin_unmap(dmamap_machine *m, uint64_t pa, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, pa, "machine is closed");
    int rc = dmamap_fail(err, DMAMAP_EINVAL, pa, "no I/O window translation at %#llx", (unsigned long long)pa);
    LOCK(&m->lock);
    for (int i = 0; i < MAX_IOWIN; i++) {
        if (m->iowin[i].live && m->iowin[i].pa == pa) {
            m->iowin[i].live = 0;
            dmamap_err_clear(err);
            rc = 0;
            break;
        }
    }
    UNLOCK(&m->lock);
    return dmamap_m_done(m, rc, err);
}

int dmamap_io_access(dmamap_machine *m, uint64_t pa, int size, int is_write, uint64_t *value,
                     struct dmamap_err *err)
{
    struct dmamap_region reg, *r = dmamap_region_lookup(m, pa, &reg) ? &reg : NULL;
    if (!r)
        return dmamap_fail(err, DMAMAP_EPHYS, pa, "physical address %#llx is in no region",
                           (unsigned long long)pa);
    if (pa + (uint64_t)size - r->base > r->size)
        return dmamap_fail(err, DMAMAP_EPHYS, pa, "access %#llx+%d crosses the end of its region",
                           (unsigned long long)pa, size);
    if (r->type == DMAMAP_MEM_IOWIN) {
        uint64_t port = 0;
        int found = 0;
        LOCK(&m->lock);
        for (int i = 0; i < MAX_IOWIN; i++) {
            struct iowin_slot *s = &m->iowin[i];
            if (s->live && pa >= s->pa && pa - s->pa < s->size) {
                port = s->port + (pa - s->pa);
                found = 1;
                break;
            }
        }
        UNLOCK(&m->lock);
        if (!found)
            return dmamap_fail(err, DMAMAP_EIOFAULT, pa, "I/O window address %#llx is past the ports mapped "
                               "(no port translation)", (unsigned long long)pa);
        return dmamap_port_access(m, port, size, is_write, value, err);
    }
    if (r->type != DMAMAP_MEM_MMIO)
        return dmamap_fail(err, DMAMAP_EINVAL, pa, "%#llx is memory, not MMIO", (unsigned long long)pa);
    if (!m->io_fn)
        return dmamap_fail(err, DMAMAP_EIO, pa, "no handler for MMIO at %#llx", (unsigned long long)pa);
    m->mmio_accesses++;
    int rc = m->io_fn(m->io_ctx, DMAMAP_IO_MMIO, r->owner, r->bar, pa - r->base, size, is_write, value);
    if (rc)
        return dmamap_fail(err, rc, pa, "MMIO handler at %#llx failed", (unsigned long long)pa);
    return 0;
}
