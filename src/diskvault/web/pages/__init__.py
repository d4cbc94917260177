"""Page routers, in the order the application includes them."""

from diskvault.web.pages import (
    admin,
    auth,
    backups,
    boot,
    dashboard,
    images,
    jobs,
    organizer,
    restore,
)

ROUTERS = [
    auth.router,
    dashboard.router,
    images.router,
    jobs.router,
    backups.router,
    restore.router,
    boot.router,
    organizer.router,
    admin.router,
]
