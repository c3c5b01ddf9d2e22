"""A red-black tree shaped exactly as Linux's lib/rbtree.c shapes it (``rb_insert_color``,
``rb_erase``), over node keys that are addresses; the tree itself lives in Python.

bpf_rbtree_add descends from the root calling the program's ``less`` (go left when
``less(new, node)``, else right), links the new node there and rebalances as
``rb_insert_color`` does; bpf_rbtree_remove is ``rb_erase``. Keeping the kernel's shape makes
``bpf_rbtree_root/left/right`` and the sequence of ``less`` calls the kernel's too.
"""
from __future__ import annotations

RED, BLACK = 0, 1


class Node:
    __slots__ = ("key", "parent", "left", "right", "color")

    def __init__(self, key: int) -> None:
        self.key = key
        self.parent = self.left = self.right = None
        self.color = RED


class RbTree:
    def __init__(self) -> None:
        self.root: Node | None = None
        self.nodes: dict[int, Node] = {}

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self):
        return iter(list(self.nodes))

    def __contains__(self, key: int) -> bool:
        return key in self.nodes

    def first(self) -> int:
        n = self.root
        if n is None:
            return 0
        while n.left is not None:
            n = n.left
        return n.key

    def child(self, key: int, right: bool) -> int:
        n = self.nodes.get(key)
        c = None if n is None else (n.right if right else n.left)
        return c.key if c is not None else 0

    def clear(self) -> None:
        self.root, self.nodes = None, {}

    # -- insertion (rb_link_node + rb_insert_color) -------------------------------------------
    def link(self, key: int, parent_key: int, right: bool) -> None:
        """Link a new node under ``parent_key`` (0: as the root) on its left or right side,
        then rebalance."""
        node = self.nodes[key] = Node(key)
        parent = self.nodes.get(parent_key) if parent_key else None
        node.parent = parent
        if parent is None:
            self.root = node
        elif right:
            parent.right = node
        else:
            parent.left = node
        self._insert_color(node)

    def _rotate(self, x: Node, left: bool) -> None:
        """Rotate ``x`` down to the left (its right child up) or to the right."""
        y = x.right if left else x.left
        inner = y.left if left else y.right
        if left:
            x.right = inner
        else:
            x.left = inner
        if inner is not None:
            inner.parent = x
        y.parent = x.parent
        if x.parent is None:
            self.root = y
        elif x is x.parent.left:
            x.parent.left = y
        else:
            x.parent.right = y
        if left:
            y.left = x
        else:
            y.right = x
        x.parent = y

    def _insert_color(self, node: Node) -> None:
        while True:
            parent = node.parent
            if parent is None:
                node.color = BLACK
                return
            if parent.color == BLACK:
                return
            gparent = parent.parent
            left = parent is gparent.left
            uncle = gparent.right if left else gparent.left
            if uncle is not None and uncle.color == RED:
                parent.color = uncle.color = BLACK
                gparent.color = RED
                node = gparent
                continue
            if node is (parent.right if left else parent.left):
                self._rotate(parent, left)
                node, parent = parent, node
            parent.color, gparent.color = BLACK, RED
            self._rotate(gparent, not left)
            return

    # -- erase (rb_erase) ---------------------------------------------------------------------
    def _replace(self, old: Node, new: Node | None) -> None:
        p = old.parent
        if p is None:
            self.root = new
        elif p.left is old:
            p.left = new
        else:
            p.right = new
        if new is not None:
            new.parent = p

    def erase(self, key: int) -> None:
        node = self.nodes.pop(key)
        child, tmp = node.right, node.left
        rebalance = None
        if tmp is None:                         # at most a right child
            self._replace(node, child)
            if child is not None:
                child.color = node.color
            elif node.color == BLACK:
                rebalance = node.parent
        elif child is None:                     # only a left child (red, node black)
            self._replace(node, tmp)
            tmp.color = node.color
        else:                                   # two children: the successor takes its place
            successor = child
            if successor.left is None:          # the right child itself
                parent = successor
                child2 = successor.right
            else:
                while successor.left is not None:
                    successor = successor.left
                parent = successor.parent
                child2 = successor.right
                parent.left = child2
                if child2 is not None:
                    child2.parent = parent
                successor.right = node.right
                node.right.parent = successor
            successor.left = node.left
            node.left.parent = successor
            self._replace(node, successor)
            if child2 is not None:
                child2.color = BLACK
            elif successor.color == BLACK:
                rebalance = parent
            successor.color = node.color
        if rebalance is not None:
            self._erase_color(rebalance)

    def _erase_color(self, parent: Node) -> None:
        node = None                             # the black-deficient subtree (NULL at first)
        while True:
            left = node is parent.left
            sibling = parent.right if left else parent.left
            if sibling.color == RED:            # case 1
                sibling.color, parent.color = BLACK, RED
                self._rotate(parent, left)
                sibling = parent.right if left else parent.left
            far = sibling.right if left else sibling.left
            near = sibling.left if left else sibling.right
            if (far is None or far.color == BLACK) and (near is None or near.color == BLACK):
                sibling.color = RED             # case 2
                if parent.color == RED:
                    parent.color = BLACK
                    return
                node, parent = parent, parent.parent
                if parent is None:
                    return
                continue
            if far is None or far.color == BLACK:   # case 3
                near.color, sibling.color = BLACK, RED
                self._rotate(sibling, not left)
                sibling = parent.right if left else parent.left
                far = sibling.right if left else sibling.left
            sibling.color = parent.color        # case 4
            parent.color = BLACK
            far.color = BLACK
            self._rotate(parent, left)
            return

    def check(self) -> int:
        """The black height; AssertionError when a red-black rule is broken (tests)."""
        def walk(n, lo_parent):
            if n is None:
                return 1
            assert n.parent is lo_parent
            if n.color == RED:
                assert (n.left is None or n.left.color == BLACK) and \
                       (n.right is None or n.right.color == BLACK)
            a, b = walk(n.left, n), walk(n.right, n)
            assert a == b
            return a + (n.color == BLACK)
        assert self.root is None or self.root.color == BLACK
        return walk(self.root, None)
