/* The kernel half every user root shares (x86-64, RISC-V): as Linux's
 * pgd_alloc, a new user root gets a copy of the kernel root's entries
 * [kernel_half, 512).  Where x86-64 Linux pre-populates every kernel
 * PGD entry so the copies never go stale, this core publishes instead: after
 * each change to the first kernel address space's tables, the changed shared
 * entries are copied to every user root (and to the shadow new roots copy). */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

int dmamap_pt_user_attach(dmamap_as *as, struct dmamap_err *err)
{
    dmamap_machine *m = as->m;
    int half = m->arch->kernel_half;
    if (half <= 0)
        return 0;
    int rc = 0;
    LOCK(&m->lock);
    if (as->kernel) {
        if (!m->kern_as) {
            m->kern_as = as;
            memset(m->kshadow, 0, sizeof m->kshadow);
        }
        goto out;
    }
    if (m->nusers == m->capusers) {
        int cap = m->capusers ? 2 * m->capusers : 8;
        dmamap_as **n = realloc(m->users, (size_t)cap * sizeof *n);
        if (!n) {
            rc = dmamap_fail(err, DMAMAP_ENOMEM, 0, "host out of memory for the user address space list");
            goto out;
        }
        m->users = n;
        m->capusers = cap;
    }
    m->users[m->nusers++] = as;
    memcpy(dmamap_table_ptr(m, as->root) + half, m->kshadow + half, (size_t)(ENTRIES - half) * sizeof(uint64_t));
out:
    UNLOCK(&m->lock);
    return rc;
}

void dmamap_pt_user_detach(dmamap_as *as)
{
    dmamap_machine *m = as->m;
    int half = m->arch->kernel_half;
    if (half <= 0)
        return;
    size_t n = (size_t)(ENTRIES - half) * sizeof(uint64_t);
    LOCK(&m->lock);
    if (as == m->kern_as) {   /* its tables go: no user root may keep pointing at them */
        for (int i = 0; i < m->nusers; i++)
            memset(dmamap_table_ptr(m, m->users[i]->root) + half, 0, n);
        memset(m->kshadow, 0, sizeof m->kshadow);
        m->kern_as = NULL;
    }
    for (int i = 0; i < m->nusers; i++)
        if (m->users[i] == as) {
            m->users[i] = m->users[--m->nusers];
            memset(dmamap_table_ptr(m, as->root) + half, 0, n);
            break;
        }
    UNLOCK(&m->lock);
}

void dmamap_pt_kernel_sync(dmamap_as *as)
{
    dmamap_machine *m = as->m;
    int half = m->arch->kernel_half;
    if (!as->kernel || half <= 0 || m->kern_as != as)
        return;
    const uint64_t *root = dmamap_table_ptr(m, as->root);
    size_t n = (size_t)(ENTRIES - half) * sizeof(uint64_t);
    /* Only this address space (under its lock) writes the shadow. */
    if (!memcmp(root + half, m->kshadow + half, n))
        return;
    LOCK(&m->lock);
    memcpy(m->kshadow + half, root + half, n);
    for (int i = 0; i < m->nusers; i++)
        memcpy(dmamap_table_ptr(m, m->users[i]->root) + half, root + half, n);
    UNLOCK(&m->lock);
}
