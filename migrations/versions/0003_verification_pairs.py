"""verification pairs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 11:30:40.065384
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "verification_pair",
        sa.Column("group_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("first_sample_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("second_sample_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("first_template", sa.String(length=200), nullable=True),
        sa.Column("second_template", sa.String(length=200), nullable=True),
        sa.Column("genuine", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(
            ["first_sample_id"],
            ["sample.id"],
            name=op.f("fk_verification_pair_first_sample_id_sample"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["protocol_group.id"],
            name=op.f("fk_verification_pair_group_id_protocol_group"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["second_sample_id"],
            ["sample.id"],
            name=op.f("fk_verification_pair_second_sample_id_sample"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_id", "position", name=op.f("pk_verification_pair")),
    )
    with op.batch_alter_table("verification_pair", schema=None) as batch_op:
        batch_op.create_index("ix_verification_pair_first_sample_id", ["first_sample_id"], unique=False)
        batch_op.create_index("ix_verification_pair_second_sample_id", ["second_sample_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("verification_pair", schema=None) as batch_op:
        batch_op.drop_index("ix_verification_pair_second_sample_id")
        batch_op.drop_index("ix_verification_pair_first_sample_id")

    op.drop_table("verification_pair")
